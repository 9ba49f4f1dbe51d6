"""Sequence-quality tables and figure: sequence files of the same images scored by networks that did not
choose them, with paired 95 % bootstrap intervals over images against the first file.

    .venv/bin/python benchmarks/annotator/sequence_quality.py --tag quality-aligned \\
        --files runs/nogs-aligned/nogs-1000 runs/nogs-aligned/salient-1000 runs/nogs-aligned/random-1000 \\
        --scorer "posterior seed 1=runs/posterior-aligned-s1/checkpoints/best" \\
        --classifier "RAM on random glimpses=runs/classifier-aligned/checkpoints/best" \\
        --chooser "the posterior that chose NOGS=runs/posterior-aligned/checkpoints/best"

Scorers: ``--scorer`` a posterior network on the masked image (``foveal train-posterior``), ``--classifier`` a
glimpse network on the files' grid forced to look along the sequences (``foveal train`` with
``algorithm.train_policy=random``); ``--chooser`` a posterior scored the same way but marked as biased (the
network that chose one of the files favours it). Each is ``LABEL=CHECKPOINT``. Numbers come from
:func:`foveal.sequences.scoring.compare_sequences`, the code behind ``foveal sequences score``.
Writes ``benchmarks/annotator/<tag>.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from foveal.data import build_dataset  # noqa: E402
from foveal.evaluation.sequence_quality import network_scorer  # noqa: E402
from foveal.models import load_model  # noqa: E402
from foveal.sequences import GlimpseSequences, compare_sequences  # noqa: E402

RESULTS = Path(__file__).resolve().parent


def _labelled(text: str) -> tuple[str, str]:
    label, sep, path = text.rpartition("=")  # the last "=": a label may hold one ("N=64"), a path does not
    if not sep or not label or not path:
        raise SystemExit(f"expected LABEL=PATH, found {text!r}")
    return label, path


def _ci(d: dict, digits: int = 3) -> str:
    lo, hi = d["ci95"]
    return f"{d['mean']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def markdown(report: dict) -> str:
    T = report["num_glimpses"]
    lines = [f"Sequence quality on {report['images']} images of {report['dataset']}/{report['split']}, "
             f"scored by networks that did not choose them (the chooser, if listed, did). Accuracy after t = 1..{T} "
             "glimpses; mean accuracy and entropy (nats) over t = 1..T; differences to the first file per image, "
             "95 % bootstrap intervals over images.", ""]
    for s in report["scorers"]:
        lines += [f"**{s['label']}** ({s['kind']}, `{s['checkpoint']}`)", "",
                  "| sequences | " + " | ".join(f"acc. t={t}" for t in range(1, T + 1)) +
                  " | mean acc. | mean entropy | acc. after T vs first | mean acc. vs first | mean entropy vs first |",
                  "|---|" + "---|" * (T + 5)]
        for f in s["files"]:
            d = f["vs_first"]
            lines.append(f"| {f['method']} | " + " | ".join(f"{v:.3f}" for v in f["accuracy"][1:]) +
                         f" | {f['accuracy_mean']:.3f} | {f['entropy_mean']:.3f} | " +
                         ("-" if d is None else _ci(d["accuracy_after_T"])) + " | " +
                         ("-" if d is None else _ci(d["accuracy_mean"])) + " | " +
                         ("-" if d is None else _ci(d["entropy_mean"])) + " |")
        lines.append("")
    lines.append(f"Command: `{report['command']}`")
    return "\n".join(lines) + "\n"


def figure(report: dict, path: Path) -> None:
    scorers = report["scorers"]
    fig, axes = plt.subplots(2, len(scorers), figsize=(4.2 * len(scorers), 6.5), squeeze=False)
    for k, s in enumerate(scorers):
        for f in s["files"]:
            t = range(len(f["accuracy"]))
            axes[0][k].plot(t, f["accuracy"], marker="o", label=f["method"])
            axes[1][k].plot(t, f["entropy"], marker="o", label=f["method"])
        axes[0][k].set_title(s["label"], fontsize=9)
        axes[0][k].set_ylabel("accuracy")
        axes[1][k].set_ylabel("entropy (nats)")
        axes[1][k].set_xlabel("glimpses t")
    handles, labels = axes[0][0].get_legend_handles_labels()
    rows = -(-len(labels) // 2)  # one shared legend under the plots, two columns, so no curve is hidden
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.set_figheight(6.5 + 0.22 * rows)
    fig.suptitle(f"{report['dataset']}: sequences of {report['images']} images scored by other networks", fontsize=10)
    fig.tight_layout(rect=(0, 0.22 * rows / fig.get_figheight() + 0.01, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tag", required=True, help="<tag>.{md,json,png}")
    p.add_argument("--report-only", action="store_true",
                   help="score nothing: remake <tag>.md and <tag>.png from <tag>.json")
    p.add_argument("--files", nargs="+",
                   help="sequence files of the same split and grid, each PATH or LABEL=PATH (LABEL: its row's name; "
                        "default the file's method)")
    p.add_argument("--scorer", action="append", default=[], help="LABEL=posterior checkpoint (repeatable)")
    p.add_argument("--classifier", action="append", default=[], help="LABEL=glimpse network checkpoint (repeatable)")
    p.add_argument("--chooser", action="append", default=[], help="LABEL=the posterior that chose a file (biased)")
    p.add_argument("--resamples", type=int, default=10_000)
    args = p.parse_args(argv)
    if args.report_only:
        report = json.loads((RESULTS / f"{args.tag}.json").read_text())
        (RESULTS / f"{args.tag}.md").write_text(markdown(report))
        figure(report, RESULTS / f"{args.tag}.png")
        return 0
    if not args.files:
        p.error("--files is required (unless --report-only)")
    torch.set_num_threads(1)
    named = [_labelled(f) if "=" in f else (None, f) for f in args.files]
    files = [GlimpseSequences.load(path) for _, path in named]
    dataset = build_dataset(files[0].dataset, files[0].split)
    report = {"dataset": files[0].dataset, "split": files[0].split, "files": args.files, "scorers": [],
              "command": "python benchmarks/annotator/sequence_quality.py " + " ".join(
                  a if " " not in a else f'"{a}"' for a in (sys.argv[1:] if argv is None else argv))}
    for kind, specs in (("posterior", args.scorer), ("glimpse network", args.classifier),
                        ("posterior, chose NOGS", args.chooser)):
        for spec in specs:
            label, path = _labelled(spec)
            model, _ = load_model(path)
            result = compare_sequences(network_scorer(model), dataset, files, resamples=args.resamples)
            for (name, _), entry in zip(named, result["files"]):
                entry["method"] = name or entry["method"]
            report.update(images=result["images"], num_glimpses=result["num_glimpses"])
            report["scorers"].append({"label": label, "kind": kind, "checkpoint": path, "files": result["files"]})
            print(f"scored by {label}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{args.tag}.md").write_text(markdown(report))
    figure(report, RESULTS / f"{args.tag}.png")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
