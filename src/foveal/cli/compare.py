"""``foveal compare``: train several methods on one dataset with several seeds, then the paper's Table 1,
Figs. 4-6 (:mod:`foveal.recipes.compare.config`). No torch import at module level."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from foveal.cli.common import add_device_argument, checked_device

EPILOG = """examples:
  foveal compare --estimate 300 inputs.nogs=runs/nogs/train      time every method, estimate the total
  foveal compare inputs.nogs=runs/nogs/train inputs.posterior=runs/posterior/checkpoints/best
  foveal compare --methods RAM,PS-NOGS --seeds 0               a part of it (two processes can split the work)
  foveal compare --report-only                                  the table and figures of what has finished
  foveal compare --report-only --methods RAM,PS-NOGS            ... of these methods only
  foveal compare --quick --out runs/compare-smoke               a tiny smoke run of the whole pipeline
  foveal compare --workers 2 inputs.nogs=...                    two runs at a time (a local Ray instance)
  foveal compare --devices cuda:0,cuda:1 inputs.nogs=...        one run on each GPU (a local Ray instance)
  foveal compare --device cuda inputs.nogs=...                  every run on the GPU, one at a time, here
  foveal compare --ray auto --devices cuda inputs.nogs=...      the Ray cluster this node belongs to, one GPU a
                                                                task (examples/slurm/compare-ray.sbatch)
Run the same command again, with any number of workers, to resume: finished runs are skipped,
interrupted ones continue. Runs that need another start after it: PS-RAM after the RAM run of its
seed, RAM+ after its pretraining; each generated input (salience maps, PS-RAM sequences) is made once.
A run that fails is reported with its folder (traceback in <out>/status/); the runs that do not need
it still train, then the report of what finished is written and the command exits with status 1.
With Ray each run is a task (1 CPU, or 1 GPU); a task whose worker or node dies is started again and
continues from its run's last checkpoint; one line per finished step. torchrun is for one big run
(foveal train), not for compare. Guide: docs/guides/scale-out.md.
"""


def add_parsers(sub) -> None:
    p = sub.add_parser("compare", help="the paper's comparison: RAM, RAM+, WSRAM, PS-RAM, PS-NOGS, PS-HGS (resumable)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="compare-cluttered-fashion-mnist",
                   help="comparison YAML or built-in compare-* name (default: %(default)s)")
    p.add_argument("--out", type=Path, help="comparison folder (default: runs/<config>[-quick])")
    p.add_argument("--quick", action="store_true", help="merge the config's quick: section (tiny smoke settings)")
    p.add_argument("--methods", help="comma-separated method names to train, or with --report-only to report (default: all)")
    p.add_argument("--seeds", help="comma-separated seeds to train, or with --report-only to report (default: the config's)")
    p.add_argument("--estimate", type=int, metavar="N",
                   help="time N iterations of every method and print the estimated total time; trains nothing else")
    p.add_argument("--report-only", action="store_true", help="write the table and figures; train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, metavar="N",
                   help="train N runs at once as tasks of a local Ray instance with N CPUs, one torch thread each "
                        "(default: 1: here, one after the other, with progress bars, without Ray); a failed run "
                        "stops only the runs that need it")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the steps as Ray tasks: without ADDRESS on a local Ray instance sized to --workers (default: "
                        "this machine's CPUs); with one (auto, host:6379, ray://host:10001) on that cluster, whose "
                        "nodes must see --out at the same path")
    add_device_argument(p, "the run config's train.device; sets it for every run, also with --estimate; "
                           "for several workers, one device each, use --devices")
    p.add_argument("--devices", metavar="LIST",
                   help="comma-separated devices, one run at a time on each (cuda:0,cuda:1; may repeat: runs share "
                        "it): the runs' train.device; several: a local Ray instance; with Ray each task gets one GPU "
                        "(or its share) from Ray")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="run-config overrides (train.iterations=2000) or comparison ones (seeds=[0,1], inputs.nogs=...)")
    p.set_defaults(handler=_compare)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _compare(args) -> int:
    from foveal.cli.common import progress_bar
    from foveal.recipes.compare.config import load_compare_config, restrict
    from foveal.recipes.compare.run import run_comparison

    _refuse_torchrun()
    overrides = tuple(args.overrides)
    if checked_device(args.device) is not None:
        if args.devices:
            raise ValueError(f"--device {args.device} with --devices {args.devices}: expected one of them (--device: "
                             "every run's device, one worker; --devices: one worker per device)")
        overrides += (f"train.device={args.device}",)  # last: the option wins over an override
    cfg = load_compare_config(args.config, overrides, quick=args.quick)
    out = args.out or Path("runs") / f"{Path(str(args.config)).stem}{'-quick' if args.quick else ''}"
    if args.estimate is not None:
        from foveal.recipes.compare.estimate import estimate_comparison

        from foveal.runtime import resolve_device

        n_devices = len([d for d in (args.devices or "").split(",") if d.strip()])
        workers = args.workers if args.workers is not None else n_devices or 1
        device = resolve_device(cfg.run["train"].get("device", "auto"), "train.device")
        est = estimate_comparison(cfg, out, iterations=args.estimate, workers=workers, device=str(device), log=_log)
        out.mkdir(parents=True, exist_ok=True)
        (out / "estimate.json").write_text(json.dumps(est, indent=2))
        print(f"{'method':<12} {'it/s':>7} {'iterations':>11} {'per run':>9} {'runs':>5} {'total':>9}")
        for row in est["methods"]:
            if row.get("skipped"):
                print(f"{row['method']:<12} skipped (no inputs for it on this data)")
                continue
            print(f"{row['method']:<12} {row['it_per_s']:>7.2f} {row['iterations']:>11,} "
                  f"{_hours(row['seconds_per_run']):>9} {row['runs']:>5} {_hours(row['seconds']):>9}")
        print(f"salience maps (RAM+): {_hours(est['salience_s'])}; one test evaluation: {est['test_evaluation_s']:.0f} s")
        print(f"estimated total, one process, {est['torch_threads']} torch thread(s): {_hours(est['total_s'])} "
              f"({out / 'estimate.json'})")
        if workers > 1:
            print(f"estimated wall time with {workers} workers at that speed each: {_hours(est['wall_s'])}")
        return 0
    methods = tuple(m.strip() for m in args.methods.split(",")) if args.methods else None
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers, found {args.seeds!r}") from None
    devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else ()
    skipped, failed = {}, None
    if args.report_only:  # a report of a part: only these methods and seeds
        cfg = restrict(cfg, methods, seeds)
    else:
        from foveal.recipes.compare.run import RunsFailed

        try:
            skipped = run_comparison(cfg, out, log=_log, progress=lambda: progress_bar(args.quiet), methods=methods,
                                     seeds=seeds, workers=args.workers, devices=devices, ray=args.ray)
        except RunsFailed as err:
            skipped, failed = err.skipped, err
    from foveal.recipes.compare.report import write_report

    report = write_report(cfg, out, skipped)
    print(report["paths"]["table_md"].read_text())
    for name, path in report["paths"].items():
        print(f"{name}: {path}")
    if failed is not None:
        _log(f"foveal compare: error: {failed}")
        return 1
    return 0



def _refuse_torchrun() -> None:
    """compare spreads whole runs; torchrun's ranks are for one data-parallel run."""
    world = os.environ.get("WORLD_SIZE", "1") or "1"
    if world.isdigit() and int(world) > 1:
        raise ValueError(f"foveal compare does not run under torchrun (WORLD_SIZE={world}): to spread a comparison's "
                         "runs use --workers N (one machine) or --ray ADDRESS (a Ray cluster, e.g. on Slurm: "
                         "examples/slurm/compare-ray.sbatch); torchrun trains one big run data-parallel: foveal train")
