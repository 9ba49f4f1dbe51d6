#!/usr/bin/env bash
# One GPU lease, one prepared script (the device machine is lent for minutes, not hours):
#   1. benchmarks/gpu/gpu_posterior.py: the annotator's posterior (DenseNet-121, 224 px, the paper's CelebA-HQ
#      setting) on the GPU, fp32 eager and bf16 channels-last, plus the bank search on CPU and GPU;
#   2. a 1-GPU data-parallel run (torchrun) of the PS-NOGS comparison's network (ram-grid, cluttered
#      Fashion-MNIST), to show the DDP path runs on a GPU and how fast this network trains there;
#   3. the PS-NOGS study's strong posterior (benchmarks/ps-nogs/posterior-strong.yaml, all 30,000
#      iterations) trained on the GPU, beside (2);
#   4. the strong annotation (N = 200 completions, ESS 0.2 of 1,000 proposals, plain search) of train
#      positions 0-999, one Ray task per chunk with NW chunks sharing the GPU, until the time is up; the
#      folder continues anywhere (benchmarks/ps-nogs/pipeline.sh) with the chunks that are left. (The lease
#      that made the study's annotation ran 8 processes claiming chunks, which foveal no longer has.)
# Everything comes back as $OUT/lease.tar.gz (run folders without their `last` checkpoints once finished)
# and $OUT/lease.log. The machine has no network: Fashion-MNIST travels in .gpu-data/ (carried).
#
#   OUT=/where bash benchmarks/gpu/gpu_lease.sh                 on the GPU machine (BUDGET seconds, default 530)
#   SMOKE=1 OUT=/tmp/o bash benchmarks/gpu/gpu_lease.sh         a rehearsal on the CPU at tiny sizes
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(el) s] $*"; }
left() { local r=$(( $1 - $(el) )); [ $r -gt 1 ] && echo $r || echo 1; }  # seconds until second $1
: "${OUT:?set OUT}"
SMOKE=${SMOKE:-0}
BUDGET=${BUDGET:-530}       # the whole script ends by then, the archive written
POST_END=${POST_END:-330}   # the posterior stops by then (else no annotation: a cut cosine schedule is weaker)
NW=${NW:-8}                 # annotation chunks sharing the GPU at once (Ray tasks)
W=${WORK:-/tmp/lease}
PY=${PY:-python3}
rm -rf "$W" && mkdir -p "$W" "$OUT"
exec > >(tee -a "$OUT/lease.log") 2>&1
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
S=benchmarks/ps-nogs
FM=/usr/share/datasets/fashion-mnist
if [ ! -f $FM/train-images-idx3-ubyte.gz ]; then mkdir -p $FM && cp .gpu-data/*.gz $FM/; fi

if [ "$SMOKE" = 1 ]; then
  DEV=cpu
  GPUP=(--smoke --device cpu --variants fp32-eager)
  POST=(train.iterations=30 train.val_every=10 train.val_batches=2 train.num_workers=2 train.checkpoint_every=10)
  DDP=(train.iterations=20 train.val_every=10 train.val_batches=2 train.num_workers=1)
  ANN=(count=6 n_completions=8 chunk_size=2 batch_size=256)
else
  DEV=cuda
  GPUP=(--device cuda --variants fp32-eager bf16-eager-cl --seconds 4)
  POST=(train.num_workers=10 train.checkpoint_every=1000)
  DDP=(train.iterations=1500 train.num_workers=3)
  ANN=(count=1000 n_completions=200 chunk_size=10 batch_size=8192)
fi
log "start: $(hostname), $(nproc) cores"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# A second lease continues a posterior the first one cut (RESUME=a folder holding its posterior-strong run
# folder) and leaves out 1 and 2, which the first one measured.
RESUME=${RESUME:-}
[ -n "$RESUME" ] && cp -r "$RESUME/posterior-strong" "$W/"

# 1. the DenseNet-121 posterior benchmark on the GPU, while the CPU builds the image bank
log "bank (CPU)${RESUME:+, no benchmarks (a continuation)}"
$PY -m foveal build-bank cluttered-fashion-mnist --option canvas=60 --start 2000 --out "$W/bank.npy" --quiet &
BANK=$!
if [ -z "$RESUME" ]; then
  log "gpu_posterior.py (GPU)"
  timeout "$(left 110)" $PY benchmarks/gpu/gpu_posterior.py "${GPUP[@]}" --out "$W/gpu-results" || log "gpu_posterior.py: exit $?"
fi
wait $BANK || log "bank: exit $?"

# 2 and 3: the strong posterior and, beside it, a 1-GPU torchrun run of ram-grid
DDPPID=
if [ -z "$RESUME" ]; then
  log "1-GPU DDP ram-grid"
  timeout "$(left 300)" $PY -m torch.distributed.run --standalone --nproc-per-node=1 -m foveal train \
    --config $S/comparison/runs/ram/seed-0/config.yaml --run-dir "$W/ddp-ram" --device $DEV --quiet \
    train.patience=null train.patience_on=null evaluate.figures=false evaluate.examples=0 "${DDP[@]}" \
    > "$W/ddp-ram.log" 2>&1 &
  DDPPID=$!
fi
log "strong posterior"
timeout "$(left "$POST_END")" $PY -m foveal train-posterior --config $S/posterior-strong.yaml \
  --run-dir "$W/posterior-strong" --device $DEV --quiet "${POST[@]}" || log "train-posterior: exit $?"
if [ -n "$DDPPID" ]; then
  wait $DDPPID || log "ddp: exit $?"
  tail -n 5 "$W/ddp-ram.log"
fi
log "posterior done"

# 4. the strong annotation: one Ray task per chunk, NW chunks sharing the GPU at once, until the budget
#    (a killed run leaves its finished chunks; the same command continues with the rest)
if [ -f "$W/posterior-strong/results.json" ]; then
  A=(--config benchmarks/configs/annotate-nogs-wide.yaml --out "$W/nogs-strong"
     --posterior "$W/posterior-strong/checkpoints/best" --bank "$W/bank.npy" --device $DEV
     n_completions=200 target_ess=0.2 screen_completions=null threads=1 "${ANN[@]}")
  RAY=(--ray --workers $NW)
  [ "$DEV" = cuda ] && RAY+=(--tasks-per-gpu $NW)
  log "annotation: $NW chunks at a time"
  timeout "$(left $((BUDGET - 20)))" $PY -m foveal annotate "${A[@]}" "${RAY[@]}" > "$W/annotate.log" 2>&1 \
    || log "annotate: exit $?"
  tail -n 3 "$W/annotate.log"
  log "annotation: $(ls "$W/nogs-strong/parts/shard-0-of-1" 2>/dev/null | grep -c '\.json$') chunks done"
else
  log "no finished posterior: no annotation"
fi

# the archive: finished run folders without their `last` checkpoints (a cut posterior keeps it, to continue)
[ -f "$W/posterior-strong/results.json" ] && rm -f "$W"/posterior-strong/checkpoints/last.*
rm -rf "$W"/ddp-ram/checkpoints
tar czf "$OUT/lease.tar.gz" -C "$W" --exclude=bank.npy --exclude=bank.json .
ls -la "$OUT"
log "end"
