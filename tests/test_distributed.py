"""Data-parallel training (foveal.training.distributed): 2 gloo processes of one thread each give the update of
one process on the global batch, stay identical, resume exactly, and never hang on unused parameters.

The engine-level checks run in one 2-process job (``torch.multiprocessing``, spawned once: starting processes
is the slow part here); the CLI check runs ``torchrun --standalone`` as a user would.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from foveal.checkpoint import load_checkpoint
from foveal.config import apply_overrides, load_config
from foveal.models import create_model
from foveal.recipes.run import train_run
from foveal.retina import LocationGrid
from foveal.runtime import launcher_world_size, resolve_device
from foveal.sequences import GlimpseSequences
from foveal.training import TrainConfig, fit
from foveal.training import distributed
from foveal.training.loop import IterationBatches
from foveal.training.partial_supervision import PartialSupervision, PartialSupervisionConfig
from foveal.training.reinforce import Reinforce, ReinforceConfig
from foveal.training.saccader import SaccaderReinforce, SaccaderReinforceConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
REPO = Path(__file__).resolve().parents[1]
SIZE, G, T, N = (16, 16), 4, 3, 16
GRID = LocationGrid.from_stride(SIZE, G, 4)  # 4 x 4 cells
SMALL = dict(glimpse_size=G, hidden_size=8, glimpse_hidden=8, location_hidden=8, feature_size=8)
BASE = dict(batch_size=4, lr=0.05, val_every=3, log_every=2, eval_batch_size=3, device="cpu", tensorboard=False)
SUPERVISED_HALF = tuple(range(0, N, 2))  # the images with a sequence in the mixed partial-supervision run


class Toy:
    """A split as the sequence files see it; images that tell their class by their brightness pattern."""

    name, split, image_shape, num_classes = "toy", "train", (1, *SIZE), 3

    def __init__(self, n=N, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.images = torch.rand(n, 1, *SIZE, generator=g) * 0.5 + self.labels.view(-1, 1, 1, 1) / 4

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "index": i}


def model(name="ram-grid", seed=0):
    torch.manual_seed(seed)
    extra = {"grid_stride": 4} if name == "ram-grid" else {}
    return create_model(name, in_channels=1, num_classes=3, image_size=SIZE, **SMALL, **extra)


def sequences(folder: Path, name: str, indices) -> str:
    cells = torch.arange(len(indices) * T).view(len(indices), T) * 5 % len(GRID)
    GlimpseSequences("toy", "train", SIZE, G, torch.tensor(indices), GRID.corners()[cells], grid=GRID,
                     method="random").save(folder / name)
    return str(folder / name)


def vector(m: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def one_rank_has_only_supervised_images(seed: int, iterations: int) -> bool:
    """Whether some step of the mixed run gives one rank only supervised images and the other some unsupervised."""
    ranks = [list(IterationBatches(N, BASE["batch_size"], seed, 0, iterations, rank=r, world_size=2)) for r in (0, 1)]
    full = [[all(i in SUPERVISED_HALF for i in b) for b in batches] for batches in ranks]
    return any(a != b for a, b in zip(*full))


def test_one_process_is_a_world_of_one():
    """Without torchrun every helper is a no-op, and rank 0 keeps the one-process seed."""
    assert distributed.world() == distributed.World() and distributed.is_main()
    x = torch.arange(3.0)
    assert distributed.all_reduce_mean(x) is x and distributed.all_gather_objects(7) == [7]
    assert distributed.mean_of_logs({"ce": 1.0}) == {"ce": 1.0} and distributed.local_batch_size(5) == 5
    assert distributed.rank_seed(11, 0) == 11 and len({distributed.rank_seed(11, r) for r in range(4)}) == 4
    assert distributed.start() == distributed.World()  # no WORLD_SIZE in this environment: nothing started


def test_rank_devices_and_launcher_environment():
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto", local_rank=1) == torch.device("cpu")
        with pytest.raises(ValueError, match="train.device: 'cuda' requested but CUDA is not available"):
            resolve_device("cuda", local_rank=1)
    elif torch.cuda.device_count() == 1:
        assert resolve_device("auto", local_rank=0) == torch.device("cuda", 0)
        with pytest.raises(ValueError, match="LOCAL_RANK=1, but this machine has 1 GPU"):
            resolve_device("cuda", local_rank=1)
    assert launcher_world_size({}) == 1 and launcher_world_size({"WORLD_SIZE": "4"}) == 4
    with pytest.raises(ValueError, match="WORLD_SIZE='x'"):
        launcher_world_size({"WORLD_SIZE": "x"})


# ------------------------------------------------------------------------------------------ the 2-rank job
def _job(rank: int, world_size: int, port: int, folder: str, mixed_seed: int) -> None:
    """One rank: the environment torchrun would give it, then every scenario, each rank's runs side by side."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    folder = Path(folder)
    with distributed.data_parallel() as w:
        assert w == distributed.world() and w.size == 2 and w.rank == rank and distributed.is_main() == (rank == 0)
        with pytest.raises(ValueError, match="train.batch_size: expected a multiple of the 2 processes"):
            train_run(apply_overrides(load_config("demo"), ["train.batch_size=15"]), folder / "odd")
        assert not (folder / "odd").exists()
        _saccader_baseline(rank, folder)
        _scenarios(folder, mixed_seed)


def _identical_on_every_rank(m: nn.Module, what: str) -> None:
    first, second = distributed.all_gather_objects(vector(m))
    assert torch.equal(first, second), f"{what}: the ranks' parameters differ"


def _scenarios(folder: Path, mixed_seed: int) -> None:
    train, val = Toy(), Toy(12, seed=1)
    # 1. deterministic: partial supervision with every image supervised (forced rollouts), official weighting
    every = PartialSupervision(PartialSupervisionConfig(num_glimpses=T, sequences=str(folder / "seqs_all")))
    net = model()
    fit(net, every, train, val, TrainConfig(iterations=6, optimizer="sgd", seed=3, **BASE), folder / "all")
    _identical_on_every_rank(net, "all supervised")

    # 2. REINFORCE with sampled glimpses (each rank its own) and a sampled validation, killed after 4 and resumed
    reinforce = Reinforce(ReinforceConfig(num_glimpses=T, eval_policy="sample"))
    config = TrainConfig(iterations=8, seed=5, checkpoint_every=2, **{**BASE, "log_every": 3, "val_every": 4})
    whole = model("ram")
    fit(whole, reinforce, train, val, config, folder / "whole")
    fit(model("ram"), reinforce, train, val, config, folder / "killed", stop_after=4)
    resumed = model("ram", seed=9)  # other weights: they must come from the checkpoint
    fit(resumed, reinforce, train, val, config, folder / "killed")
    _identical_on_every_rank(resumed, "resumed")
    assert torch.equal(vector(whole), vector(resumed))

    # 3. a random policy: the location and baseline networks get no gradient on any rank: no hang, and no step
    # (their grads stay None, as in one process; zero-filled grads would let Adam's weight decay move them)
    random_policy = Reinforce(ReinforceConfig(num_glimpses=T, train_policy="random"))
    net = model("ram")
    untouched = {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith(("location", "baseline"))}
    fit(net, random_policy, train, val, TrainConfig(iterations=3, weight_decay=0.1, seed=1, **BASE), folder / "random")
    for name, before in untouched.items():
        assert torch.equal(dict(net.named_parameters())[name], before), f"{name} moved without a gradient"

    # 4. mixed partial supervision in which some step gives one rank supervised images only: no REINFORCE there,
    # and under the per-example weighting no baseline regression either (the baseline network is unused there)
    mixed = PartialSupervision(PartialSupervisionConfig(num_glimpses=T, sequences=str(folder / "seqs_half"),
                                                        weighting="per-example"))
    net = model()
    fit(net, mixed, train, val, TrainConfig(iterations=6, seed=mixed_seed, **BASE), folder / "mixed")
    _identical_on_every_rank(net, "mixed")


class _StubSaccader(nn.Module):
    """What stage 3's loss reads of a Saccader: a rollout and the parts its L2 terms name. Image b (value v_b)
    predicts class 0 when v_b > 0.5, with log pi = score * (1 + v_b) at each glimpse."""

    def __init__(self):
        super().__init__()
        self.representation, self.attention, self.mix, self.cell = (nn.Linear(1, 1) for _ in range(4))
        self.score = nn.Parameter(torch.ones(()))

    def rollout(self, images, num_glimpses, policy=None):
        v = images.flatten(1)[:, 0]  # [B]
        B = v.shape[0]
        logits = torch.stack([v, 1 - v], -1)[:, None].expand(B, num_glimpses, 2)
        log_prob = self.score * (1 + v)[:, None].expand(B, num_glimpses)
        return SimpleNamespace(logits=logits, log_prob=log_prob, entropy=torch.zeros(B, num_glimpses))


SACCADER_VALUES = (0.9, 0.8, 0.1, 0.7)  # all labelled 0: rewards 1, 1 | 0, 1 (rank 0 | rank 1)


def saccader_step(values) -> tuple[float, float]:
    """The score gradient and the logged accuracy (the baseline) of stage 3's loss on images of ``values``."""
    stub = _StubSaccader()
    algorithm = SaccaderReinforce(SaccaderReinforceConfig(num_glimpses=2, samples=2, ce_weight=0.0))
    images = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 2, 2)
    out = algorithm.loss(stub, {"image": images, "label": torch.zeros(len(values), dtype=torch.long)})
    out.loss.backward()
    return stub.score.grad.item(), float(out.logs["accuracy"])


def _saccader_baseline(rank: int, folder: Path) -> None:
    """Each rank's stage-3 gradient on its half of the batch (the mean is what DDP would apply)."""
    found = distributed.all_gather_objects(saccader_step(SACCADER_VALUES[2 * rank:2 * rank + 2]))
    if rank == 0:
        (folder / "saccader.json").write_text(json.dumps(found))


# ------------------------------------------------------------------------------------------------ tests
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(folder: Path, mixed_seed: int, timeout_s: float = 150.0) -> None:
    """Run :func:`_job` on 2 processes; a hang fails the test (its processes are killed) instead of blocking it."""
    context = mp.start_processes(_job, args=(2, _free_port(), str(folder), mixed_seed), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the 2-process job did not finish in {timeout_s:.0f} s (a hang?)")


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    sequences(folder, "seqs_all", tuple(range(N)))
    sequences(folder, "seqs_half", SUPERVISED_HALF)
    mixed_seed = next(s for s in range(100) if one_rank_has_only_supervised_images(s, 6))
    _spawn(folder, mixed_seed)
    return folder, mixed_seed


def _metrics(run: Path) -> list[list[str]]:
    return [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]


def test_two_ranks_equal_one_rank_on_the_global_batch(two_rank_runs, tmp_path):
    """Deterministic rollouts (every image supervised, official weighting, whose sequence term is a SUM): the
    parameters after 6 SGD steps agree with one process to 1e-6 (measured: 6e-8), validation and training logs
    to 1e-6 relative. SGD, because Adam divides by sqrt(v): a gradient entry that is 0 up to rounding can take a
    full step of either sign, so its parameters agree only up to lr, not up to floating point."""
    folder, _ = two_rank_runs
    every = PartialSupervision(PartialSupervisionConfig(num_glimpses=T, sequences=str(folder / "seqs_all")))
    one = model()
    fit(one, every, Toy(), Toy(12, seed=1), TrainConfig(iterations=6, optimizer="sgd", seed=3, **BASE), tmp_path)
    two = model()
    load_checkpoint(folder / "all" / "checkpoints" / "last", model=two)
    assert torch.allclose(vector(one), vector(two), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(vector(one), vector(model()), atol=1e-3)  # it trained
    expected, found = _metrics(tmp_path), _metrics(folder / "all")
    assert [row[:3] for row in expected] == [row[:3] for row in found]
    for (*_, a), (*_, b) in zip(expected, found):
        assert float(a) == pytest.approx(float(b), rel=1e-6, abs=1e-6)
    saved = json.loads((folder / "all" / "checkpoints" / "last.json").read_text())
    assert saved["extra_state"]["world_size"] == 2 and len(saved["extra_state"]["rank_states"]) == 1


def test_killed_two_rank_run_resumes_exactly_and_another_world_size_is_refused(two_rank_runs):
    folder, _ = two_rank_runs
    assert (folder / "whole" / "metrics.csv").read_text() == (folder / "killed" / "metrics.csv").read_text()
    config = TrainConfig(iterations=10, seed=5, checkpoint_every=2, **{**BASE, "log_every": 3, "val_every": 4})
    with pytest.raises(ValueError, match=r"trained by 2 process\(es\) and is resumed by 1.*--nproc-per-node=2"):
        fit(model("ram"), Reinforce(ReinforceConfig(num_glimpses=T, eval_policy="sample")), Toy(), Toy(12, 1), config,
            folder / "killed")


def test_saccader_baseline_is_the_global_batch_mean(two_rank_runs):
    """Stage 3's reward baseline is all-reduced: the mean of the ranks' gradients is the one-process gradient
    (with each rank's own baseline it would not be: rank 0's rewards are all 1, so its gradient would be 0)."""
    folder, _ = two_rank_runs
    (grad0, accuracy0), (grad1, accuracy1) = json.loads((folder / "saccader.json").read_text())
    grad, accuracy = saccader_step(SACCADER_VALUES)
    assert accuracy0 == accuracy1 == accuracy == 0.75
    assert (grad0 + grad1) / 2 == pytest.approx(grad, rel=1e-6) and grad0 != 0


def test_unused_parameters_do_not_hang(two_rank_runs):
    """Finished at all: the random-policy run and the mixed run with an all-supervised rank (asserted inside)."""
    folder, mixed_seed = two_rank_runs
    assert one_rank_has_only_supervised_images(mixed_seed, 6)
    for run in ("random", "mixed"):
        assert (folder / run / "checkpoints" / "last.json").exists()


def test_torchrun_cli_trains_one_run_and_only_rank_0_writes(tmp_path):
    run = tmp_path / "run"
    tiny = ["train.iterations=6", "train.val_every=3", "train.batch_size=16", "train.val_batches=2",
            "model.hidden_size=16", "model.glimpse_hidden=8", "model.location_hidden=8", "model.feature_size=16",
            "algorithm.num_glimpses=3", "evaluate.batch_size=250", "evaluate.examples=4", "evaluate.figures=false",
            "train.tensorboard=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(REPO / ".venv" / "bin" / "torchrun"), "--standalone", "--nproc-per-node=2", "-m",
                           "foveal", "demo", "--run-dir", str(run), "--quiet", *tiny], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy:") == 1 and done.stderr.count("run folder:") == 1
    results = json.loads((run / "results.json").read_text())
    assert results["training"]["world_size"] == 2
    assert json.loads((run / "checkpoints" / "best.json").read_text())["info"]["world_size"] == 2
