"""Training throughput of RAM, one thread: data alone, the model step alone, and end to end, beside a
per-sample-loop reference written here.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/throughput/throughput.py            # both settings, ~3 min
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/throughput/throughput.py --settings fashion --iterations 50

Settings (the configs' own networks, batch 128):

- fashion:   ram-fashion-mnist, 28x28 Fashion-MNIST, 6 glimpses of 8 px, 1 scale, GRU core
- cluttered: ram-cluttered-fashion-mnist, 60x60 cluttered Fashion-MNIST, 6 glimpses of 12 px, 3 scales, GRU

Columns, in iterations per second:

- data: batches of 128 from the training set as the engine makes them (its sampler and DataLoader), after
  the first epoch; "data, first epoch": the first epoch's own rate (translated / cluttered items are made
  when first read and kept as their bytes, :mod:`foveal.data.synthetic`);
- step: loss, backward and Adam (``foreach``, as the engine's) on one batch already in memory;
- end to end: ``fit``, what ``foveal train`` does, in a long run: its own measured rate over
  ``--iterations`` iterations after its first logging window (:func:`fit_rate`);
- compiled step / end to end (``--compile``): the same with ``train.compile=true`` (the loss through
  ``torch.compile``; its first call, the compiling, is not timed);
- reference step / end to end: the same network (same layer sizes, GRU core, the same hybrid REINFORCE
  loss) written the way a popular per-sample RAM is: the retina cuts each image's patches in a Python
  loop, one image at a time; its end to end reads items one by one (``dataset[i]``) and stacks them.

The ratio is ours / the reference's, end to end. "Bound (products)": the step's matrix products and
convolutions, recorded in one step and each timed alone at its own shapes and strides. Writes
benchmarks/throughput/throughput.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.data import DataLoader, default_collate

from foveal.config import apply_overrides, load_config
from foveal.recipes.experiment import build_experiment
from foveal.runtime import speed_up_allocator
from foveal.training import TrainConfig, fit
from foveal.training.loop import IterationBatches

SETTINGS = {"fashion": "ram-fashion-mnist", "cluttered": "ram-cluttered-fashion-mnist"}


class PerSampleRAM(nn.Module):
    """RAM as a per-sample implementation writes it: the same layers as :class:`foveal.models.ram.RAM`
    (mlp glimpse net, GRU core, Gaussian policy), a retina that loops over the images."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        inputs = cfg.num_scales * cfg.in_channels * cfg.glimpse_size ** 2
        self.what = nn.Linear(inputs, cfg.glimpse_hidden)
        self.where = nn.Linear(2, cfg.location_hidden)
        self.mix_what = nn.Linear(cfg.glimpse_hidden, cfg.feature_size)
        self.mix_where = nn.Linear(cfg.location_hidden, cfg.feature_size)
        self.core = nn.GRUCell(cfg.feature_size, cfg.hidden_size)
        self.location = nn.Linear(cfg.hidden_size, 2)
        self.baseline = nn.Linear(cfg.hidden_size, 1)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_classes)

    def retina(self, images: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        cfg, out = self.cfg, []
        H, W = images.shape[2:]
        for b in range(images.shape[0]):  # one image at a time
            scales = []
            for k in range(cfg.num_scales):
                side = cfg.glimpse_size * cfg.scale_factor ** k
                r = int(((loc[b, 0].item() + 1) / 2 * H - side / 2 + 0.5) // 1)
                c = int(((loc[b, 1].item() + 1) / 2 * W - side / 2 + 0.5) // 1)
                padded = F.pad(images[b], (side, side, side, side))
                patch = padded[:, r + side:r + 2 * side, c + side:c + 2 * side]
                if k:
                    patch = F.avg_pool2d(patch[None], cfg.scale_factor ** k)[0]
                scales.append(patch)
            out.append(torch.cat(scales).flatten())
        return torch.stack(out)

    def loss(self, images: torch.Tensor, labels: torch.Tensor, T: int) -> torch.Tensor:
        h = images.new_zeros(images.shape[0], self.cfg.hidden_size)
        log_probs, baselines = [], []
        for _ in range(T):
            mean = torch.tanh(self.location(h.detach()))
            dist = Normal(mean, self.cfg.location_std)
            loc = dist.sample().clamp(-1, 1)
            log_probs.append(dist.log_prob(loc).sum(1))
            baselines.append(self.baseline(h.detach()).squeeze(1))
            g = torch.relu(self.mix_what(torch.relu(self.what(self.retina(images, loc))))
                           + self.mix_where(torch.relu(self.where(loc))))
            h = self.core(g, h)
        logits = self.classifier(h)
        reward = (logits.argmax(1) == labels).float()
        baseline = torch.stack(baselines, 1)
        advantage = reward[:, None] - baseline.detach()
        return (F.cross_entropy(logits, labels) - (torch.stack(log_probs, 1) * advantage).sum(1).mean()
                + F.mse_loss(baseline, reward[:, None].expand_as(baseline)))


def rate(run, seconds: float, least: int = 3) -> float:
    """Calls of ``run`` per second: as many as fit in ``seconds`` after one warm-up call (at least ``least``)."""
    run()
    count, start = 0, time.perf_counter()
    while count < least or time.perf_counter() - start < seconds:
        run()
        count += 1
    return count / (time.perf_counter() - start)


def gemm_gflops(seconds: float = 2.0) -> float:
    """This core's float32 matrix-product speed at the step's largest shape (GRU: [128, 256] x [256, 768])."""
    a, b = torch.randn(128, 256), torch.randn(256, 768)
    return rate(lambda: a @ b, seconds) * 2 * 128 * 256 * 768 / 1e9


PRODUCTS = ("mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward", "mkldnn_convolution")


def product_seconds(step) -> tuple[float, int]:
    """Seconds of one ``step``'s matrix products and convolutions, each timed alone at its own shapes and
    strides (``(seconds, calls)``): a tighter bound than FLOPs at peak, as small products run below it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._overloadpacket.__name__ in PRODUCTS:
                calls.append((func, args, kwargs or {}))
            return func(*args, **(kwargs or {}))

    with Record():
        step()

    def alone(a):  # a fresh tensor of the same shape, strides and values, outside autograd
        if isinstance(a, torch.Tensor):
            return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype).copy_(a.detach())
        return type(a)(alone(x) for x in a) if isinstance(a, (list, tuple)) else a

    total = 0.0
    for func, a, k in calls:
        a, k = alone(a), {name: alone(v) for name, v in k.items()}
        total += 1 / rate(lambda: func(*a, **k), 0.05, least=5)
    return total, len(calls)


def fit_rate(model, algorithm, data, train_cfg: TrainConfig, n: int) -> float:
    """``fit``'s iterations per second in a long run: the rate of its own log windows (every ``log_every``
    iterations: data, step and logging), over ``n`` iterations after the first window, which holds the
    start (and with ``train.compile`` the compiling); the last validation and checkpoint come after them."""
    every, rates = train_cfg.log_every, []

    def progress(iteration: int, total: int, shown: dict) -> None:
        if iteration % every == 0 and iteration > every:
            rates.append(shown["it_per_s"])

    iterations = every + n // every * every
    with tempfile.TemporaryDirectory() as folder:
        fit(model, algorithm, data["train"], data["val"],
            dataclasses.replace(train_cfg, iterations=iterations, val_every=iterations), Path(folder), progress=progress)
    return len(rates) / sum(1 / r for r in rates)  # windows of equal length: time adds up


def measure(setting: str, args) -> dict:
    cfg = apply_overrides(load_config(SETTINGS[setting]), [f"train.batch_size={args.batch_size}"])
    torch.manual_seed(0)
    exp = build_experiment(cfg, ("train", "val"))
    train, model, algorithm = exp.data["train"], exp.model, exp.algorithm
    B = args.batch_size

    batches = iter(DataLoader(train, batch_sampler=IterationBatches(len(train), B, 0, 0, 10 ** 6)))
    epoch = -(-len(train) // B)  # the first epoch makes every item (kept after, on a base of bytes)
    start = time.perf_counter()
    for _ in range(epoch):
        next(batches)
    data_first = epoch / (time.perf_counter() - start)
    data = rate(lambda: next(batches), args.seconds)  # after it: what every later epoch costs

    batch = next(batches)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)  # as the engine builds it

    def step() -> None:
        out = algorithm.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()

    step_rate = rate(step, args.seconds)
    with FlopCounterMode(display=False) as counter:  # matrix products of one step (forward and backward)
        step()
    step_gflop = counter.get_total_flops() / 1e9
    products_s, products_calls = product_seconds(step)
    compiled = {}
    if args.compile:
        from foveal.training.distributed import loss_function

        compiled_loss = loss_function(model, algorithm, torch.device("cpu"), compile=True)

        def compiled_step() -> None:
            out = compiled_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()

        compiled["compiled_step_its"] = rate(compiled_step, args.seconds)

    train_cfg = TrainConfig(**{**cfg["train"], "val_batches": 1, "tensorboard": False, "lr_schedule": "constant"})
    end_to_end = fit_rate(model, algorithm, exp.data, train_cfg, args.iterations)
    if args.compile:
        compiled["compiled_end_to_end_its"] = fit_rate(model, algorithm, exp.data,
                                                       dataclasses.replace(train_cfg, compile=True), args.iterations)

    reference = PerSampleRAM(model.config)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-3)
    T = algorithm.config.num_glimpses

    def ref_step(images, labels) -> None:
        loss = reference.loss(images, labels, T)
        ref_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ref_optimizer.step()

    ref_rate = rate(lambda: ref_step(batch["image"], batch["label"]), args.seconds)
    order = iter(IterationBatches(len(train), B, 1, 0, 10 ** 6))

    def ref_end_to_end() -> None:
        items = default_collate([train[i] for i in next(order)])  # item by item, then stacked
        ref_step(items["image"], items["label"])

    ref_e2e = rate(ref_end_to_end, args.seconds)
    return {"setting": setting, "config": SETTINGS[setting], "batch_size": B, "data_first_epoch_its": data_first,
            "data_its": data, "step_its": step_rate, "products_ms": 1e3 * products_s, "products_calls": products_calls,
            "products_bound_its": 1 / products_s,
            "end_to_end_its": end_to_end, "data_share_of_step": step_rate / data,
            "step_gflop": step_gflop, "bound_its": gemm_gflops() / step_gflop,
            **compiled, "reference_step_its": ref_rate, "reference_end_to_end_its": ref_e2e, "ratio": end_to_end / ref_e2e}


def markdown(report: dict) -> str:
    lines = [f"RAM training throughput, iterations/s, batch {report['batch_size']}, {report['threads']} thread "
             f"(torch {report['torch']}). Data: after the first epoch (which makes every item; its own rate "
             "in the next column); data share = data time / step time. End to end: `fit` in a long run (its own rate "
             f"over {report['iterations']} iterations after its first logging window). Bound (peak) = the step's "
             "matrix products (GFLOP, forward and backward, counted by torch's FlopCounterMode) at this core's "
             "measured speed for the step's largest product; bound (products) = the step's matrix products and convolutions, "
             "each timed alone at its own shapes: the it/s of a step that did nothing else.", "",
             "| setting | data | data, first epoch | step | end to end | data share | reference step | "
             "reference end to end | ratio (end to end) | step GFLOP | bound (peak) | products, ms | bound (products) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['setting']} ({r['config']}) | {r['data_its']:.1f} | {r['data_first_epoch_its']:.1f} | "
                     f"{r['step_its']:.1f} | {r['end_to_end_its']:.1f} | {100 * r['data_share_of_step']:.0f} % | "
                     f"{r['reference_step_its']:.1f} | {r['reference_end_to_end_its']:.1f} | {r['ratio']:.2f}x | "
                     f"{r['step_gflop']:.2f} | {r['bound_its']:.1f} | {r['products_ms']:.1f} ({r['products_calls']} calls) | "
                     f"{r['products_bound_its']:.1f} |")
    if any("compiled_step_its" in r for r in report["rows"]):
        lines += ["", "With `train.compile=true` (compiling not timed):", "",
                  "| setting | step | end to end | ratio to the reference (end to end) |", "|---|---|---|---|"]
        lines += [f"| {r['setting']} | {r['compiled_step_its']:.1f} | {r['compiled_end_to_end_its']:.1f} | "
                  f"{r['compiled_end_to_end_its'] / r['reference_end_to_end_its']:.2f}x |"
                  for r in report["rows"] if "compiled_step_its" in r]
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=200, help="end-to-end iterations (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0, help="time per measured column (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--tag", default="throughput")
    ap.add_argument("--compile", action="store_true", help="also time the loss through torch.compile (train.compile)")
    ap.add_argument("--report-only", action="store_true", help="measure nothing: remake <tag>.md from <tag>.json")
    args = ap.parse_args()
    if args.report_only:
        report = json.loads((args.out / f"{args.tag}.json").read_text())
        (args.out / f"{args.tag}.md").write_text(markdown(report))
        return
    speed_up_allocator()
    torch.set_num_threads(1)
    rows = [measure(s, args) for s in args.settings]
    report = {"command": " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv]), "threads": 1,
              "torch": torch.__version__, "batch_size": args.batch_size, "iterations": args.iterations, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{args.tag}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
