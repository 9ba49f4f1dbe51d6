"""Paired test-accuracy differences between methods of a comparison, seed by seed.

For a pair of methods (A, B), A's test accuracy minus B's on every seed both finished, greedy (the run's
``results.json``) and sampled (``sampled/results.json``, where the comparison has a sampled evaluation), each
on the seeds that have it, then the mean ± sd and the 95 % Student-t interval over those seeds
(:func:`foveal.recipes.compare.convergence.mean_interval`). ``benchmarks/compare/compare_targets.py --pairs`` prints
the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from foveal.recipes.compare.config import SAMPLED
from foveal.recipes.compare.convergence import mean_and_spread, mean_interval

__all__ = ["parse_pairs", "run_test_accuracy", "pairs_table"]


def parse_pairs(texts: list[str], methods: list[str]) -> list[tuple[str, str]]:
    """``["A:B", ...]`` -> ``[("A", "B"), ...]``, every name one of ``methods``.

    Raises:
        ValueError: naming the first text that is not ``A:B`` of two of ``methods``.
    """
    pairs = []
    for text in texts:
        a, _, b = text.partition(":")
        if a not in methods or b not in methods:
            raise ValueError(f"--pairs: expected A:B with A and B among --methods {methods}, found {text!r}")
        pairs.append((a, b))
    return pairs


def run_test_accuracy(run: Path, sampled: bool) -> Optional[float]:
    """A run's test accuracy in points: greedy (``results.json``) or sampled (``sampled/results.json``); None
    if the file is not there.

    Raises:
        ValueError: the file holds no number ``test_accuracy``.
    """
    path = run / SAMPLED / "results.json" if sampled else run / "results.json"
    if not path.exists():
        return None
    try:
        return 100 * float(json.loads(path.read_text())["test_accuracy"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: test_accuracy: expected a number, could not read it ({e!r})") from None


def pairs_table(runs: dict[str, dict[int, Path]], pairs: list[tuple[str, str]]) -> str:
    """Markdown: for each pair (A, B), A's test accuracy minus B's on each seed both finished, greedy / sampled
    (points), then the mean ± sd and the 95 % Student-t interval over those seeds.

    Args:
        runs: ``{method: {seed: run folder}}`` of the finished runs.
    """
    seeds = sorted({s for found in runs.values() for s in found})
    header = ["pair", *(f"seed {s}" for s in seeds), "mean ± sd, greedy", "95 % interval", "mean ± sd, sampled",
              "95 % interval"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for a, b in pairs:
        cells, diffs = [f"{a} - {b}"], {False: [], True: []}
        for s in seeds:
            if s not in runs[a] or s not in runs[b]:
                cells.append("-")
                continue
            texts = []
            for sampled in (False, True):
                x, y = run_test_accuracy(runs[a][s], sampled), run_test_accuracy(runs[b][s], sampled)
                if x is None or y is None:
                    texts.append("-")
                else:
                    diffs[sampled].append(x - y)
                    texts.append(f"{x - y:+.1f}")
            cells.append(" / ".join(texts))
        for sampled in (False, True):
            mean, sd, n = mean_and_spread(diffs[sampled])
            _, low, high, _ = mean_interval(diffs[sampled])
            cells.append("-" if not n else f"{mean:+.1f}" + (f" ± {sd:.1f} ({n})" if n > 1 else " (1)"))
            cells.append("-" if n < 2 else f"[{low:+.1f}, {high:+.1f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
