"""Saccader vs engineered policies vs DRAM on 60x60 cluttered Fashion-MNIST: accuracy after 1..12 glimpses.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/saccader/saccader.py --scale small --seeds 0 1 2  # ~14 min a seed
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/saccader/saccader.py --scale full --seeds 0 1 2   # configs as shipped

"small" was measured on one shared CPU core; "full" (about 3x the training, all 10,000 test images) is an
estimate of ~45 min a seed there.

Per seed, every run is an ordinary run folder under --runs (a killed benchmark resumes where it stopped;
finished evaluations are reused):

1. the Saccader's three stages (``foveal train-saccader``: configs saccader-{representation,location,
   reinforce}-cluttered-fashion-mnist), 6 glimpses, a bagnet-19 representation (19 px receptive field
   every 4 px, an 11 x 11 grid);
2. DRAM (config saccader-dram-cluttered-fashion-mnist: 19 px glimpses at 2 resolutions, 6 glimpses);
3. ``foveal evaluate-policies`` on the first --limit test images, up to 12 glimpses (twice the 6 trained
   with): the Saccader and DRAM with their own policies and classifiers (and the Saccader after stage 2, before
   REINFORCE); random, ordered logits, Sobel mean and Sobel variance driving the stage-1 representation
   network (the paper's BagNet-77-lowD role); and the final Saccader's policy driving that same stage-1
   network, which separates the learned policy's share of the gain from stage 3's fine-tuned classifier.

Writes benchmarks/saccader/saccader.{md,json,png}. The paper's claims to check: the Saccader beats the
engineered policies at 6 glimpses, and its accuracy does not fall with more glimpses than trained with
(DRAM's did).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from foveal.config import apply_overrides, load_config
from foveal.runtime import speed_up_allocator

STAGES = {"representation": "saccader-representation-cluttered-fashion-mnist",
          "location": "saccader-location-cluttered-fashion-mnist",
          "reinforce": "saccader-reinforce-cluttered-fashion-mnist"}
DRAM = "saccader-dram-cluttered-fashion-mnist"
# "small" fits ~30 minutes of one shared CPU core; "full" keeps the configs' own settings (hours).
SCALES = {
    "small": {"representation": ["train.iterations=2000", "train.batch_size=32"],
              "location": ["train.iterations=400", "train.batch_size=32"],
              "reinforce": ["train.iterations=600", "train.batch_size=32"],
              "dram": ["train.iterations=2500", "train.batch_size=32"],
              "common": ["train.val_every=500", "train.val_batches=4", "train.eval_batch_size=250"], "limit": 1000},
    "full": {"representation": [], "location": [], "reinforce": [], "dram": [], "common": [], "limit": None},
    # seconds: checks that the script runs, measures nothing
    "smoke": {**{s: ["train.iterations=4"] for s in ("representation", "location", "reinforce", "dram")},
              "common": ["train.val_every=2", "train.val_batches=1", "train.eval_batch_size=50"], "limit": 40},
}
POLICIES = ["random", "ordered-logits", "sobel-mean", "sobel-variance"]
BEFORE_RL = "Saccader before RL (stage 2)"
POLICY_ONLY = "Saccader policy, stage-1 network"
ORDER = ["Saccader", BEFORE_RL, POLICY_ONLY, "ordered-logits", "sobel-mean", "sobel-variance", "random", "DRAM"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=list(SCALES), default="small")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--max-glimpses", type=int, default=12)
    ap.add_argument("--limit", type=int, help="test images evaluated (default: the scale's)")
    ap.add_argument("--occlusion", action="store_true", help="also run the occlusion analysis")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-saccader"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    ap.add_argument("--tag", default="saccader")
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: remake <tag>.md and <tag>.png from <tag>.json")
    args = ap.parse_args()
    if args.report_only:
        report = json.loads((args.out / f"{args.tag}.json").read_text())
        (args.out / f"{args.tag}.md").write_text(markdown(report))
        plot(report, args.out / f"{args.tag}.png")
        return
    speed_up_allocator()
    torch.set_num_threads(1)
    scale = SCALES[args.scale]
    limit = args.limit if args.limit is not None else scale["limit"]
    per_seed = []
    for seed in args.seeds:
        per_seed.append(run_seed(seed, scale, limit, args))
    report = {"command": " ".join(["OMP_NUM_THREADS=1", ".venv/bin/python", *sys.argv]), "scale": args.scale,
              "overrides": {k: v for k, v in scale.items() if k != "limit"}, "limit": limit, "seeds": args.seeds,
              "max_glimpses": args.max_glimpses, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "per_seed": per_seed, "mean": aggregate(per_seed)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.tag}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{args.tag}.md").write_text(markdown(report))
    plot(report, args.out / f"{args.tag}.png")
    print(markdown(report))


def run_seed(seed: int, scale: dict, limit, args) -> dict:
    from foveal.recipes.policy_eval import run_policy_evaluation
    from foveal.recipes.run import train_run
    from foveal.recipes.saccader import run_stages

    root = args.runs / f"seed{seed}"
    seeded = [f"train.seed={seed}", f"data.seed={seed}", *scale["common"]]
    configs = {s: apply_overrides(load_config(name), seeded + scale[s]) for s, name in STAGES.items()}
    for stage in STAGES:
        log(f"seed {seed}: Saccader stage {stage}")
        run_stages(configs, root / "saccader", stages=(stage,), test=False)
    log(f"seed {seed}: DRAM")
    train_run(apply_overrides(load_config(DRAM), seeded + scale["dram"]), root / "dram", test=False)
    # training time of each run over all calls (with its validations), as the engine saved it
    timings = {stage: train_seconds(root / "saccader" / stage) for stage in STAGES}
    timings["dram"] = train_seconds(root / "dram")
    eval_dir = root / "eval"
    settings = {"limit": limit, "max_glimpses": args.max_glimpses, "occlusion": args.occlusion,
                "methods": [*POLICIES, "Saccader", "DRAM", BEFORE_RL, POLICY_ONLY]}
    done = eval_dir / "policy_eval.json"
    if done.exists() and json.loads(done.read_text()).get("settings") == settings:
        summary = json.loads(done.read_text())
    else:
        log(f"seed {seed}: evaluating policies on {limit or 'all'} test images")
        start = time.perf_counter()
        best = lambda folder: str(folder / "checkpoints" / "best")  # noqa: E731
        summary = run_policy_evaluation(
            eval_dir, classifier=best(root / "saccader" / "representation"), policies=POLICIES,
            learned=[("Saccader", best(root / "saccader" / "reinforce")), ("DRAM", best(root / "dram")),
                     (BEFORE_RL, best(root / "saccader" / "location"))],
            policy_of=[(POLICY_ONLY, best(root / "saccader" / "reinforce"))],
            max_glimpses=args.max_glimpses, train_glimpses=6, limit=limit, occlusion=args.occlusion, seed=seed)
        summary.update(settings=settings, eval_seconds=time.perf_counter() - start)
        done.write_text(json.dumps(summary, indent=2))
    timings["evaluation"] = summary.get("eval_seconds")
    return {"seed": seed, "run_dir": str(root), "seconds": timings,
            "methods": {m["label"]: m for m in summary["methods"]}}


def train_seconds(run_dir: Path):
    state = json.loads((run_dir / "checkpoints" / "last.json").read_text()).get("extra_state", {})
    return state.get("train_seconds")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def aggregate(per_seed: list[dict]) -> dict:
    """Per method and number of glimpses: mean and sd of the accuracy over seeds."""
    out = {}
    for label in per_seed[0]["methods"]:
        curves = [s["methods"][label]["accuracy"] for s in per_seed]
        areas = [s["methods"][label]["area"] for s in per_seed]
        out[label] = {"accuracy": [statistics.mean(v) for v in zip(*curves)],
                      "sd": [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*curves)],
                      "area": [statistics.mean(v) for v in zip(*areas)]}
    return out


def markdown(report: dict) -> str:
    mean = report["mean"]
    T = report["max_glimpses"]
    labels = [m for m in ORDER if m in mean] + [m for m in mean if m not in ORDER]
    n = len(report["seeds"])
    lines = [f"Accuracy (%) on the first {report['limit'] or 'all'} test images of 60x60 cluttered Fashion-MNIST "
             f"after 1..{T} glimpses; trained with 6. Scale `{report['scale']}`, seeds {report['seeds']}"
             + (" (mean ± sd)" if n > 1 else "") + ".", "",
             "| method | " + " | ".join(str(t) for t in range(1, T + 1)) + " | area @6 |",
             "|---|" + "---|" * (T + 1)]
    for label in labels:
        m = mean[label]
        cells = [f"{100 * a:.1f}" + (f" ± {100 * s:.1f}" if n > 1 else "") for a, s in zip(m["accuracy"], m["sd"])]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {100 * m['area'][5]:.0f} % |")
    times = {s["seed"]: s["seconds"] for s in report["per_seed"]}
    lines += ["", "Engineered policies (random, ordered logits, Sobel) and the final Saccader's policy",
              f"(\"{POLICY_ONLY}\") drive the stage-1 representation network; the Saccader (also before",
              "REINFORCE) and DRAM use their own policy and classifier. Area: mean fraction of the image inside",
              "the union of the first 6 glimpses' patches (19 px).", "", *checks(report), "",
              f"Command: `{report['command']}`", "",
              "Wall time per run (s; training includes its validations; one shared CPU core):", ""]
    lines += [f"- seed {seed}: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.0f}'}" for k, v in t.items())
              for seed, t in times.items()]
    return "\n".join(lines) + "\n"


def checks(report: dict) -> list[str]:
    """The paper's two claims, per seed (paired: same images, same seed): points of accuracy."""
    lines = ["Per seed, in points of accuracy:", ""]
    for s in report["per_seed"]:
        acc = {k: [100 * a for a in m["accuracy"]] for k, m in s["methods"].items()}
        best = max(POLICIES, key=lambda p: acc[p][5])
        parts = [f"Saccader - best engineered ({best}) at 6: {acc['Saccader'][5] - acc[best][5]:+.1f}"]
        if POLICY_ONLY in acc:
            parts.append(f"its policy alone (stage-1 network) - {best}: {acc[POLICY_ONLY][5] - acc[best][5]:+.1f}")
        for label in ("Saccader", "DRAM"):
            parts.append(f"{label} at 12 - at 6: {acc[label][-1] - acc[label][5]:+.1f}")
        lines.append(f"- seed {s['seed']}: " + "; ".join(parts))
    return lines


def plot(report: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    mean = report["mean"]
    for i, label in enumerate([m for m in ORDER if m in mean]):
        m = mean[label]
        xs = range(1, len(m["accuracy"]) + 1)
        ax.errorbar(xs, m["accuracy"], yerr=m["sd"] if len(report["seeds"]) > 1 else None, marker="osD^v<>"[i % 7],
                    markersize=5, linewidth=1.6, capsize=2, label=label)
    ax.axvline(6, color="grey", linestyle=":", linewidth=1.2)
    ax.set(xlabel="number of glimpses", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(f"60x60 cluttered Fashion-MNIST, scale {report['scale']}, seeds {report['seeds']} "
                 "(dotted: trained with 6)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, facecolor="white")


if __name__ == "__main__":
    main()
