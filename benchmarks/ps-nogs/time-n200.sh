#!/bin/bash
# The strong annotation's cost and its search: 8 images (train positions 1,000-1,007, outside the study's and the
# bank's) annotated at N = 200 completions with ESS 200 (target_ess 0.2 of 1,000 candidates), by the plain search
# and by screening (16 completions for every cell, all 200 for the 32 best), with the wide posterior. Results:
# annotator-n200.md.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1
for v in "plain screen_completions=null" "prune16-32 screen_completions=16 screen_top_k=32"; do
  set -- $v; name=$1; shift
  start=$(date +%s)
  .venv/bin/foveal annotate --config benchmarks/configs/annotate-nogs-wide.yaml --out runs/ps-nogs/n200-$name --quiet \
    --posterior benchmarks/ps-nogs/posteriors/wide/checkpoints/best --bank runs/ps-nogs/bank-from-2000.npy \
    start=1000 count=8 chunk_size=8 n_completions=200 target_ess=0.2 "$@"
  echo "$name $(( $(date +%s) - start )) s"
done
