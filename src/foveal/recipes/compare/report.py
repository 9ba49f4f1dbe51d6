"""The report of a comparison: the Table 1 analogue, per-run numbers and figures, from run folders only.

For every method and seed the run folder (``runs/<method>/seed-<s>/``) gives:

* iterations to converge by both of the paper's criteria (:mod:`foveal.recipes.compare.convergence`) from
  its ``metrics.csv``: validation cross-entropy within ``ce_tolerance`` of its best, validation
  accuracy within ``accuracy_tolerance`` of its best;
* with ``convergence.target_accuracy``, iterations until validation accuracy first reaches that fixed
  target (for runs cut short before they converge; runs that never reach it are counted in the table);
* iterations until validation accuracy first reaches the best one RAM reached on the same seed (the
  speed-up at equal accuracy, which the paper's criteria miss when a method settles higher than RAM);
* test accuracy and training speed from its ``results.json`` (the run config's ``eval_policy``,
  ``greedy`` by default);
* with ``evaluate_repeats: M`` > 0, the sampled test accuracy from ``sampled/results.json``: sampled
  locations, M rollouts per test image, every rollout scored, as the official partial-supervision
  trainer evaluates (:mod:`foveal.recipes.compare.config`); a sampled evaluation of another M is left out.

Written to the comparison folder: ``table.md`` (with, below the table, every method against RAM and
whether the paper's claim holds: :func:`claim_table`) and ``table.csv`` (one row per method: mean, sample
standard deviation and number of finished seeds), ``runs.csv`` (one row per run), ``summary.json``,
and ``figures/``: ``val_accuracy.png`` and ``val_ce.png`` (Fig. 6), ``iterations_ce.png`` and
``iterations_accuracy.png`` (Fig. 5), ``heatmaps.png`` (Fig. 4: all methods, first finished seed) and
``heatmaps_<method>.png`` (:func:`foveal.evaluation.glimpse_plots.plot_glimpse_heatmaps` of that run), and
what the location policy did (:func:`policy_curves`): ``policy_entropy.png`` (entropy per glimpse on
the images trained by REINFORCE; a policy that commits to places falls, one kept spread stays near
the uniform policy's) and ``sequence_nll.png`` (how well the policy fits the supervision sequences).
Unfinished runs are listed but left out of the means; ``ram+`` iterations are those of the second
stage (its pretraining iterations are reported beside them).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from foveal.evaluation import glimpse_plots
from foveal.evaluation.records import read_metrics
from foveal.files import atomic_write, atomic_write_json
from foveal.recipes.compare import plots as compare_plots
from foveal.recipes.compare.config import SAMPLED, CompareConfig, method_config, run_finished, slug
from foveal.recipes.compare.convergence import mean_and_spread, mean_interval, run_convergence

__all__ = ["collect_runs", "summarise", "markdown_table", "claim_table", "policy_curves", "write_report"]

_RUN_FIELDS = ("method", "seed", "status", "ce_iterations", "accuracy_iterations", "target_iterations", "best_val_ce",
               "best_val_accuracy", "ram_best_iterations", "test_accuracy", "sampled_test_accuracy", "iterations",
               "pretrain_iterations", "iterations_per_s", "train_time_s")
_MEANS = ("ce_iterations", "accuracy_iterations", "target_iterations", "test_accuracy", "sampled_test_accuracy",
          "iterations_per_s")  # the columns of table.csv


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.exists() else None


def _fields(cfg: CompareConfig, fields: tuple[str, ...]) -> list[str]:
    """``fields`` without the sampled test accuracy when the comparison has no sampled evaluation."""
    return [f for f in fields if cfg.evaluate_repeats > 0 or f != "sampled_test_accuracy"]


def _ram(cfg: CompareConfig) -> Optional[str]:
    """The method the others are measured against: the config's first of kind ``ram`` (None without one)."""
    return next((m.name for m in cfg.methods if m.kind == "ram"), None)


def collect_runs(cfg: CompareConfig, out: Path) -> list[dict[str, Any]]:
    """One dict per (method, seed) of the config with the fields of ``runs.csv``.

    ``ram_best_iterations``: the iterations until the run's validation accuracy first reached the best one
    RAM's finished run of the same seed reached (RAM's own row: when it reached it; None when it never did,
    or without such a RAM run): the speed-up at equal accuracy, which the paper's criteria miss when a
    method converges to a higher accuracy than RAM does.
    """
    rows, curves = [], {}
    for method in cfg.methods:
        for seed in cfg.seeds:
            run = Path(out) / "runs" / slug(method.name) / f"seed-{seed}"
            results = _read_json(run / "results.json")
            if results and not run_finished(results, method_config(cfg, method, seed)["train"]):
                results = None  # a run of another length (being continued): partial here
            row: dict[str, Any] = {k: None for k in _fields(cfg, _RUN_FIELDS)}
            row.update(method=method.name, seed=seed,
                       status="finished" if results else "partial" if (run / "metrics.csv").exists() else "pending")
            if (run / "metrics.csv").exists():
                curves[(method.name, seed)] = metrics = read_metrics(run / "metrics.csv")
                conv = run_convergence(metrics, ce_tolerance=cfg.ce_tolerance,
                                       accuracy_tolerance=cfg.accuracy_tolerance, target_accuracy=cfg.target_accuracy)
                row.update(ce_iterations=conv.ce_iterations, accuracy_iterations=conv.accuracy_iterations,
                           target_iterations=conv.target_iterations,
                           best_val_ce=conv.best_ce, best_val_accuracy=conv.best_accuracy, iterations=conv.last_iteration)
            if results:
                training = results.get("training", {})
                row.update(test_accuracy=results["test_accuracy"], iterations=training.get("iterations"),
                           iterations_per_s=training.get("iterations_per_s"), train_time_s=training.get("wall_time_s"))
            sampled = _read_json(run / SAMPLED / "results.json") if cfg.evaluate_repeats > 0 else None
            if results and sampled and sampled.get("repeats") == cfg.evaluate_repeats:
                row["sampled_test_accuracy"] = sampled["test_accuracy"]
            pre = _read_json(run / "pretrain" / "results.json")
            if pre:
                row["pretrain_iterations"] = pre.get("training", {}).get("iterations")
            rows.append(row)
    ram = _ram(cfg)
    best = {r["seed"]: r["best_val_accuracy"] for r in rows if r["method"] == ram and r["status"] == "finished"}
    for row in rows:
        key = (row["method"], row["seed"])
        if key in curves and best.get(row["seed"]) is not None:
            row["ram_best_iterations"] = run_convergence(curves[key],
                                                         target_accuracy=best[row["seed"]]).target_iterations
    return rows


def summarise(cfg: CompareConfig, rows: list[dict[str, Any]], skipped: Optional[dict[str, str]] = None) -> list[dict]:
    """One dict per method: ``{name, finished, seeds, skipped, <field>: {"mean", "sd", "n"}}`` over finished runs."""
    out = []
    for method in cfg.methods:
        done = [r for r in rows if r["method"] == method.name and r["status"] == "finished"]
        entry: dict[str, Any] = {"method": method.name, "kind": method.kind, "finished": len(done),
                                 "seeds": len(cfg.seeds), "skipped": (skipped or {}).get(method.name)}
        for key in _fields(cfg, ("ce_iterations", "accuracy_iterations", "target_iterations", "test_accuracy",
                                 "sampled_test_accuracy", "iterations_per_s", "train_time_s", "pretrain_iterations")):
            mean, sd, n = mean_and_spread([r[key] for r in done])
            entry[key] = {"mean": mean, "sd": sd, "n": n}
        out.append(entry)
    return out


def _fmt(stat: dict, digits: int = 0, scale: float = 1.0) -> str:
    if stat["n"] == 0 or math.isnan(stat["mean"]):
        return "-"
    mean, sd = stat["mean"] * scale, stat["sd"] * scale
    return f"{mean:,.{digits}f} ± {sd:,.{digits}f}" if stat["n"] > 1 else f"{mean:,.{digits}f}"


def _reached(entry: dict) -> str:
    """The target column's cell: mean ± sd over the seeds that reached the target, and how many did."""
    n, finished = entry["target_iterations"]["n"], entry["finished"]
    return _fmt(entry["target_iterations"]) + (f" ({n}/{finished})" if n < finished else "") + " | "


def _sampled(entry: dict) -> str:
    """The sampled accuracy's cell; (k/n): only k of the n finished seeds have their sampled evaluation yet."""
    n, finished = entry["sampled_test_accuracy"]["n"], entry["finished"]
    return _fmt(entry["sampled_test_accuracy"], 1, 100) + (f" ({n}/{finished})" if 0 < n < finished else "") + " | "


def _accuracy_columns(cfg: CompareConfig) -> tuple[list[str], list[str]]:
    """The test accuracy columns' headers, and the header's sentence on them (none without sampled evaluation)."""
    if cfg.evaluate_repeats == 0:
        return ["test accuracy (%)"], []
    policy, M = cfg.run["algorithm"].get("eval_policy", "greedy"), cfg.evaluate_repeats
    own = ("greedy: the mode of the location policy (the mean location, or the most probable cell of a grid "
           "policy)" if policy == "greedy" else f"{policy}: the run config's eval_policy")
    return ([f"test accuracy, {policy} (%)", f"test accuracy, sampled (M={M}) (%)"],
            ["", f"Test accuracy, {own}; sampled: locations sampled from the policy, every test image rolled out "
                 f"M = {M} times and every rollout scored, as the official partial-supervision trainer evaluates."])


def markdown_table(cfg: CompareConfig, summary: list[dict]) -> str:
    """The Table 1 analogue as Markdown (mean ± sample sd over finished seeds)."""
    run, target = cfg.run, cfg.target_accuracy
    data = run["data"]["name"]
    model = run["model"]
    accuracy, accuracy_note = _accuracy_columns(cfg)
    lines = [f"## Iterations to converge and test accuracy on {data}", "",
             f"Model `{model['name']}` ({model.get('glimpse_size', '?')} px glimpses, "
             f"{run['algorithm'].get('num_glimpses', '?')} glimpses), {run['train']['iterations']:,} iterations per run, "
             f"validation every {run['train'].get('val_every', '?')}; mean ± sd over the finished seeds "
             f"(of {len(cfg.seeds)}). Converged = first validation with cross-entropy within {cfg.ce_tolerance} of its "
             f"best (CE column) / accuracy within {100 * cfg.accuracy_tolerance:g} point(s) of its best (acc. column).",
             *(["", "**Stand-in inputs** (random sequences in place of NOGS, random salience maps): a smoke run of "
                 "the pipeline, not a result."] if cfg.inputs.get("stand_ins") else []),
             *(["", f"Target column: iterations until validation accuracy first reaches {100 * target:g} % (the same "
                 f"target for every method; (k/n): only k of the n finished seeds reached it)."] if target else []),
             *accuracy_note,
             "", "| method | seeds | iterations (CE) | iterations (acc.) | " + (f"iterations to {100 * target:g} % | "
                                                                            if target else "")
             + "".join(f"{a} | " for a in accuracy) + "it/s |",
             "|---|---|---|---|" + ("---|" if target else "") + "---|" * len(accuracy) + "---|"]
    for e in summary:
        if e["skipped"]:
            lines.append(f"| {e['method']} | skipped: {e['skipped']} | | | | |" + (" |" if target else "")
                         + " |" * (len(accuracy) - 1))
            continue
        name = e["method"] + (f" (+{_fmt(e['pretrain_iterations'])} pretraining)" if e["kind"] == "ram+" and
                              e["pretrain_iterations"]["n"] else "")
        lines.append(f"| {name} | {e['finished']}/{e['seeds']} | {_fmt(e['ce_iterations'])} | "
                     f"{_fmt(e['accuracy_iterations'])} | " + (_reached(e) if target else "") +
                     f"{_fmt(e['test_accuracy'], 1, 100)} | " +
                     (_sampled(e) if len(accuracy) > 1 else "") +
                     f"{_fmt(e['iterations_per_s'], 1)} |")
    return "\n".join(lines) + "\n"


CLAIM_SPEED_UP, CLAIM_ACCURACY_DROP = 5.0, 0.01  # our reading of the paper's claim: >= 5x faster, within 1 point


def claim_table(cfg: CompareConfig, rows: list[dict[str, Any]]) -> str:
    """Every method against RAM (the config's first method of kind ``ram``) on the seeds both finished, as
    Markdown ("" without RAM or such seeds): the speed-up, RAM's mean iterations to converge over the
    method's (CE criterion, the paper's for CelebA-HQ; the accuracy criterion beside it), the speed-up at
    equal accuracy (iterations to RAM's best validation accuracy of the same seed, ``ram_best_iterations``;
    "k/n" when the method reached it on only k of the n seeds), the test accuracy difference paired by
    seed (mean ± sd and its 95 % Student-t interval over seeds; sampled too), and whether the paper's claim
    holds, at least 5x RAM's speed (CE) with a test accuracy at most 1 point lower (greedy)."""
    ram = _ram(cfg)
    done = {(r["method"], r["seed"]): r for r in rows if r["status"] == "finished"}
    sampled = cfg.evaluate_repeats > 0
    lines = []
    for method in cfg.methods:
        seeds = [s for s in cfg.seeds if (method.name, s) in done and (ram, s) in done]
        if method.name == ram or not seeds:
            continue
        pairs = [(done[(ram, s)], done[(method.name, s)]) for s in seeds]

        def speed_up(key: str) -> Optional[float]:
            theirs, ours = ([p[i][key] for p in pairs] for i in (0, 1))
            if None in theirs or None in ours or not sum(ours):
                return None
            return sum(theirs) / sum(ours)

        def difference(key: str) -> tuple[str, Optional[float]]:
            d = [b[key] - a[key] for a, b in pairs if a.get(key) is not None and b.get(key) is not None]
            mean, sd, n = mean_and_spread(d)
            if not n:
                return "-", None
            text = _fmt({"mean": mean, "sd": sd, "n": n}, 1, 100)
            if n > 1:
                _, low, high, _ = mean_interval(d)
                text += f" [{100 * low:.1f}, {100 * high:.1f}]"
            return text, mean

        ce, acc = speed_up("ce_iterations"), speed_up("accuracy_iterations")
        equal = speed_up("ram_best_iterations")
        reached = sum(p[1].get("ram_best_iterations") is not None for p in pairs)
        equal_text = f"{equal:.2f}x" if equal is not None else f"- ({reached}/{len(pairs)})"
        greedy, drop = difference("test_accuracy")
        holds = ce is not None and drop is not None and ce >= CLAIM_SPEED_UP and drop >= -CLAIM_ACCURACY_DROP
        lines.append(f"| {method.name} | {len(seeds)} | " + " | ".join("-" if x is None else f"{x:.2f}x" for x in (ce, acc))
                     + f" | {equal_text} | {greedy} | "
                     + (f"{difference('sampled_test_accuracy')[0]} | " if sampled else "")
                     + ("**yes**" if holds else "no") + " |")
    if ram is None or not lines:
        return ""
    return "\n".join([
        "", f"## Against {ram}: the paper's claim", "",
        f"Speed-up: {ram}'s mean iterations to converge over the method's, on the seeds both finished (CE criterion; "
        f"accuracy criterion beside it). At equal accuracy: {ram}'s iterations to its best validation accuracy over "
        f"the method's to reach that accuracy, on the same seeds (k/n: reached on k of n seeds). Test accuracy "
        f"difference: method minus {ram}, paired by seed, points (mean ± sd [95 % Student-t interval of the mean over "
        f"the seeds]). Claim: at least {CLAIM_SPEED_UP:g}x "
        f"{ram}'s speed (CE) with a greedy test accuracy at most {100 * CLAIM_ACCURACY_DROP:g} point lower.", "",
        "| method | seeds | speed-up (CE) | speed-up (acc.) | speed-up at equal accuracy | "
        "test accuracy difference (points) | " + ("sampled difference (points) | " if sampled else "") + "claim holds |",
        "|---|---|---|---|---|---|" + ("---|" if sampled else "") + "---|", *lines]) + "\n"


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in fields} for r in rows)
    atomic_write(path, text.getvalue().encode())


def policy_curves(train: dict[str, tuple[np.ndarray, np.ndarray]], num_glimpses: int) -> dict[str, tuple]:
    """What the location policy did during training, per glimpse, from a run's ``train`` metrics.

    ``entropy``: the policy's entropy on the images trained by REINFORCE; ``sequence_nll``: the
    negative log-likelihood of the supervision sequences on supervised images (partial supervision).
    Partial supervision logs each term weighted by its group's share of the batch (its ``supervised``
    metric), so they are divided by it here (a ratio of window means: exact when every batch holds the
    same share, close otherwise). Curves a run did not log are absent.

    Returns:
        ``{name: (iterations, values)}``.
    """
    sup = train.get("supervised")  # (iterations, share of supervised images)

    def per_glimpse(name: str, share: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        its, values = train[name]
        if share is not None:
            if not np.array_equal(its, sup[0]):
                raise ValueError(f"train metrics: {name!r} and 'supervised' are logged at different iterations")
            keep = share > 0
            its, values = its[keep], values[keep] / share[keep]
        return its, values / num_glimpses

    out = {}
    if "entropy" in train:
        out["entropy"] = per_glimpse("entropy", None if sup is None else 1.0 - sup[1])
    if "sequence_nll" in train and sup is not None:
        out["sequence_nll"] = per_glimpse("sequence_nll", sup[1])
    return out


def write_report(cfg: CompareConfig, out: Path, skipped: Optional[dict[str, str]] = None, *,
                 figures: bool = True) -> dict[str, Any]:
    """Write the tables, summary and figures (module docstring); returns ``{"summary", "paths"}``."""
    out = Path(out)
    skipped_file = out / "skipped.json"
    skipped = {**(_read_json(skipped_file) or {}), **(skipped or {})}
    rows = collect_runs(cfg, out)
    summary = summarise(cfg, rows, skipped)
    paths = {"table_md": out / "table.md", "table_csv": out / "table.csv", "runs_csv": out / "runs.csv",
             "summary": out / "summary.json"}
    # Every file is moved into place whole: processes of one comparison (seeds split between them, or
    # ranks) each write the report when they finish, and a reader never sees half a file.
    atomic_write(paths["table_md"], (markdown_table(cfg, summary) + claim_table(cfg, rows)).encode())
    flat = [{"method": e["method"], "kind": e["kind"], "finished": e["finished"], "seeds": e["seeds"],
             "skipped": e["skipped"] or "",
             **{f"{k}_{s}": e[k][s] for k in _fields(cfg, _MEANS) for s in ("mean", "sd")}}
            for e in summary]
    _write_csv(paths["table_csv"], flat, list(flat[0]) if flat else ["method"])
    _write_csv(paths["runs_csv"], rows, _fields(cfg, _RUN_FIELDS))
    atomic_write_json(paths["summary"], {"methods": summary, "runs": rows, "skipped": skipped,
                                         "evaluate_repeats": cfg.evaluate_repeats})
    if skipped:
        atomic_write_json(skipped_file, skipped)
    if not figures:
        return {"summary": summary, "paths": paths}
    fig_dir = out / "figures"
    curves: dict[str, dict[str, list]] = {"accuracy": {}, "ce": {}}
    policy: dict[str, dict[str, list]] = {"entropy": {}, "sequence_nll": {}}
    records = {}
    for method in cfg.methods:
        for table in (curves, policy):
            for metric in table:
                table[metric][method.name] = []
        for row in rows:
            run = out / "runs" / slug(method.name) / f"seed-{row['seed']}"
            if row["method"] != method.name or row["status"] != "finished":
                continue
            metrics = read_metrics(run / "metrics.csv")
            val = metrics.get("val", {})
            for metric in curves:
                if metric in val:
                    curves[metric][method.name].append(val[metric])
            T = method_config(cfg, method, row["seed"])["algorithm"].get("num_glimpses", 6)
            for metric, series in policy_curves(metrics.get("train", {}), T).items():
                policy[metric][method.name].append(series)
            record = next(iter(sorted((run / "records").glob("glimpses_*.npz"))), None)
            if record is not None and method.name not in records:
                records[method.name] = record
                paths[f"heatmaps_{slug(method.name)}"] = glimpse_plots.plot_glimpse_heatmaps(
                    record, fig_dir / f"heatmaps_{slug(method.name)}.png",
                    title=f"{method.name}, seed {row['seed']}: where it looked at each glimpse")
    paths["val_accuracy"] = compare_plots.plot_method_curves(curves["accuracy"], fig_dir / "val_accuracy.png",
                                                             ylabel="validation accuracy (%)", percent=True)
    paths["val_ce"] = compare_plots.plot_method_curves(curves["ce"], fig_dir / "val_ce.png",
                                                       ylabel="validation cross-entropy")
    paths["policy_entropy"] = compare_plots.plot_method_curves(
        policy["entropy"], fig_dir / "policy_entropy.png", ylabel="policy entropy (nats per glimpse)",
        title="Location policy entropy, images trained by REINFORCE (mean, range shaded)")
    if any(policy["sequence_nll"].values()):
        paths["sequence_nll"] = compare_plots.plot_method_curves(
            policy["sequence_nll"], fig_dir / "sequence_nll.png", ylabel="sequence NLL (nats per glimpse)",
            title="NLL of the supervision sequences under the policy (mean, range shaded)")
    for key, criterion in (("ce_iterations", f"val CE within {cfg.ce_tolerance} of its best"),
                           ("accuracy_iterations", f"val accuracy within {100 * cfg.accuracy_tolerance:g} point of its best")):
        per = {m.name: {r["seed"]: r[key] for r in rows if r["method"] == m.name and r["status"] == "finished"}
               for m in cfg.methods}
        paths[f"iterations_{key.split('_')[0]}"] = compare_plots.plot_iterations_per_seed(
            per, fig_dir / f"iterations_{key.split('_')[0]}.png", criterion=criterion)
    if records:
        paths["heatmaps"] = compare_plots.plot_heatmaps_by_method(records, fig_dir / "heatmaps.png")
    return {"summary": summary, "paths": paths}
