"""``foveal compare``: the near-optimal-glimpse-sequences paper's comparison (Table 1, Figs. 4-6), resumable.

Several training methods, one network, one dataset, several seeds (Harvey et al. 2021, section 6):

=========  ======================================================================================
kind       what a run is
=========  ======================================================================================
ram        REINFORCE with a learned baseline (Mnih et al. 2014), the run config's own algorithm
ram+       a salience pretraining stage (:mod:`foveal.training.salience_pretraining`), then ``ram``
           started from its weights
wsram      wake-sleep training (:mod:`foveal.training.wake_sleep`); the model gets an inference
           network (``ram-grid`` -> ``ram-grid-ws``), the test-time network is unchanged
ps         partial supervision (:mod:`foveal.training.partial_supervision`) by the sequences named in
           ``sequences``: ``nogs`` (the annotator's file), ``ps-ram`` (sampled from the RAM run of the
           same seed, or from ``inputs.ps_ram_source``), ``hgs`` (CUB parts, or ``inputs.hgs_points``),
           ``salient`` / ``random`` (Sobel-salient or uniformly random cells of the model's grid for the
           same images, :data:`foveal.sequences.MAKERS`: what NOGS must beat as
           supervision), or a path
=========  ======================================================================================

A comparison config (YAML, ``compare-*.yaml`` among the built-in configs)::

    run: ram-cluttered-fashion-mnist     # the shared run config: a built-in name, a path or a mapping
    run_overrides: [model.name=ram-grid, model.grid_stride=4, ...]
    seeds: [0, 1, 2]
    methods: [{name: RAM, kind: ram}, {name: PS-NOGS, kind: ps, sequences: nogs, algorithm: {...}}, ...]
    inputs: {nogs: null, posterior: null, ps_ram_source: auto, hgs_points: null, num_sequences: 1000,
             pretrain_iterations: 1000, salience_mode: linear, uniform_mix: 0.1, salience_stride: null,
             stand_ins: false}
    convergence: {ce_tolerance: 0.01, accuracy_tolerance: 0.01, target_accuracy: null}
    evaluate_repeats: 5                  # sampled evaluation: rollouts per test image (0: none)
    quick: {run_overrides: [...], seeds: [0], inputs: {...}}   # merged in by --quick (smoke runs)

Layout of the output folder: ``runs/<method>/seed-<s>/`` are ordinary run folders (``ram+`` adds
``pretrain/`` inside) and ``runs/<method>/seed-<s>/sampled/`` the sampled evaluation of each (below);
``inputs/`` holds generated sequence files and salience maps; the report is ``table.md``,
``table.csv``, ``runs.csv``, ``summary.json`` and ``figures/`` (:mod:`foveal.recipes.compare.report`).
Running again resumes: a run with ``results.json`` of as many iterations as the config asks is finished
and skipped, an interrupted one continues from its last checkpoint, generated inputs are reused, and a
finished run without its sampled evaluation gets it (without training again). With a constant learning
rate, the same command with more ``train.iterations`` continues every finished run from its last
checkpoint, exactly as a longer run would have gone (:func:`foveal.recipes.run.check_run_dir`), and
evaluates it again, sampled evaluation included; the report counts only runs of the config's length
(PS-RAM's sequences stay those sampled once from the RAM run as it was then). ``inputs.stand_ins: true``
(smoke runs only) replaces a missing NOGS file by random sequences on the model's grid and missing
salience maps by random ones, so that the pipeline runs before any annotation exists; the report then
says so. Runs go seed by seed (every method with seed 0 first), so a partial comparison is already a
table. Supervised methods all use the same images: the first ``num_sequences`` of the NOGS file (or a
fixed random subset of the training split when there is none).

A run's own test numbers (its ``results.json``) come from the run config's ``eval_policy``, ``greedy``
by default: the mode of the location policy (the mean location, or the most probable cell of a grid
policy). The official partial-supervision trainer evaluates with sampled locations instead, every test
image repeated M = 5 times and every rollout scored. ``evaluate_repeats: M`` (default 5) does that too
once a run has finished: its best checkpoint through :func:`foveal.recipes.run.evaluate_run` with
``eval_policy: sample`` and ``repeats=M``, into ``sampled/``; the report shows both test accuracies.
``evaluate_repeats: 0`` leaves the sampled evaluation out.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

import yaml

from foveal.config import SECTIONS, apply_overrides, check_config, load_config, read_yaml, slug, split_name

__all__ = ["MethodSpec", "CompareConfig", "RunTask", "load_compare_config", "plan_runs", "slug", "KINDS", "SAMPLED",
           "EVALUATE_REPEATS"]

KINDS = ("ram", "ram+", "wsram", "ps")
SAMPLED = "sampled"  # runs/<method>/seed-<s>/sampled/: a run's sampled evaluation
SEQUENCE_SOURCES = ("nogs", "ps-ram", "hgs", "salient", "random")
BASELINES = ("salient", "random")  # made from the supervised images themselves, before any run starts
WAKE_SLEEP_MODELS = {"ram": "ram-ws", "ram-grid": "ram-grid-ws"}
_TOP_KEYS = ("run", "run_overrides", "seeds", "methods", "inputs", "convergence", "evaluate_repeats", "quick")
_INPUT_DEFAULTS = {"nogs": None, "posterior": None, "ps_ram_source": "auto", "hgs_points": None,
                   "num_sequences": 1000, "pretrain_iterations": 1000, "salience_mode": "linear", "uniform_mix": 0.1,
                   "salience_stride": None, "stand_ins": False}
# foveal.recipes.compare.convergence's CE_TOLERANCE / ACCURACY_TOLERANCE (not imported: it brings torch)
_CONVERGENCE_DEFAULTS = {"ce_tolerance": 0.01, "accuracy_tolerance": 0.01, "target_accuracy": None}
EVALUATE_REPEATS = 5  # the official partial-supervision trainer's M: sampled rollouts per test image


@dataclass(frozen=True)
class MethodSpec:
    """One row of the table.

    Attributes:
        name: the label (``"PS-NOGS"``).
        kind: one of :data:`KINDS`.
        sequences: for ``ps``: one of :data:`SEQUENCE_SOURCES` or a sequence-file path.
        algorithm: settings that override the method's algorithm settings.
        overrides: run-config overrides (``section.key=value``) for this method only.
    """

    name: str
    kind: str
    sequences: Optional[str] = None
    algorithm: dict = field(default_factory=dict)
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"methods: {self.name!r}: kind: expected one of {KINDS}, found {self.kind!r}")
        if (self.kind == "ps") != (self.sequences is not None):
            raise ValueError(f"methods: {self.name!r}: sequences: expected one of {SEQUENCE_SOURCES} or a path for "
                             f"kind ps (and nothing for other kinds), found {self.sequences!r}")
        if not isinstance(self.algorithm, dict):
            raise ValueError(f"methods: {self.name!r}: algorithm: expected a mapping of settings, found {self.algorithm!r}")


@dataclass(frozen=True)
class CompareConfig:
    """A resolved comparison config (see the module docstring)."""

    run: dict
    methods: tuple[MethodSpec, ...]
    seeds: tuple[int, ...]
    inputs: dict
    ce_tolerance: float = _CONVERGENCE_DEFAULTS["ce_tolerance"]
    accuracy_tolerance: float = _CONVERGENCE_DEFAULTS["accuracy_tolerance"]
    target_accuracy: Optional[float] = _CONVERGENCE_DEFAULTS["target_accuracy"]
    evaluate_repeats: int = EVALUATE_REPEATS  # sampled evaluation's rollouts per test image; 0: none

    def __post_init__(self) -> None:
        m = self.evaluate_repeats
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"evaluate_repeats: expected a non-negative integer (sampled rollouts per test image, "
                             f"0: no sampled evaluation), found {m!r}")
        t = self.target_accuracy
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1):
            raise ValueError(f"convergence.target_accuracy: expected null or a fraction in (0, 1], found {t!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected a non-empty list of distinct integers, found {list(self.seeds)}")
        names = [m.name for m in self.methods]
        if not names or len({slug(n) for n in names}) != len(names):
            raise ValueError(f"methods: expected at least one method and distinct names, found {names}")
        unknown = set(self.inputs) - set(_INPUT_DEFAULTS)
        if unknown:
            raise ValueError(f"inputs: unknown key(s) {sorted(unknown)}; expected some of {sorted(_INPUT_DEFAULTS)}")
        alg, _ = split_name(self.run["algorithm"])
        if alg != "reinforce":
            raise ValueError(f"run: algorithm.name: expected 'reinforce' (RAM, the baseline every method varies), "
                             f"found {alg!r}")
        n = self.inputs["num_sequences"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"inputs.num_sequences: expected a positive integer, found {n!r}")
        p = self.inputs["pretrain_iterations"]
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"inputs.pretrain_iterations: expected a positive integer, found {p!r}")

    def method(self, name: str) -> MethodSpec:
        return next(m for m in self.methods if m.name == name)


def restrict(cfg: CompareConfig, methods: Optional[tuple[str, ...]] = None,
             seeds: Optional[tuple[int, ...]] = None) -> CompareConfig:
    """``cfg`` with only these methods and seeds (None: all), in the config's order; what a report of a
    part of a comparison covers (``foveal compare --report-only --methods ...``).

    Raises:
        ValueError: a method or seed the config does not have.
    """
    names = [m.name for m in cfg.methods]
    unknown = sorted(set(methods or ()) - set(names))
    if unknown:
        raise ValueError(f"--methods: unknown method(s) {unknown}; the config has {names}")
    missing = sorted(set(seeds or ()) - set(cfg.seeds))
    if missing:
        raise ValueError(f"--seeds: seed(s) {missing} are not in the config's seeds {list(cfg.seeds)}")
    return replace(cfg, methods=tuple(m for m in cfg.methods if not methods or m.name in methods),
                   seeds=tuple(s for s in cfg.seeds if not seeds or s in seeds))


def _merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``: mappings merge, ``run_overrides`` lists append, other values replace."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif key == "run_overrides":
            out[key] = list(out.get(key) or []) + list(value or [])
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_compare_config(name_or_path: str | Path, overrides: tuple[str, ...] = (), *, quick: bool = False) -> CompareConfig:
    """Read a comparison config; ``overrides`` are ``section.key=value`` for the run config (as for
    ``foveal train``) or ``seeds=[0,1]`` / ``inputs.nogs=path`` / ``convergence.x=v`` / ``evaluate_repeats=M``
    for the comparison."""
    raw, where = read_yaml(name_or_path, "comparison config")
    raw = raw or {}
    if not isinstance(raw, dict) or set(raw) - set(_TOP_KEYS):
        found = sorted(set(raw) - set(_TOP_KEYS)) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{where}: expected the keys {_TOP_KEYS}, found {found}")
    if quick:
        raw = _merge(raw, raw.get("quick") or {})
    run_overrides = list(raw.get("run_overrides") or [])
    for item in overrides:
        key, sep, value = item.partition("=")
        head = key.split(".")[0]
        if not sep:
            raise ValueError(f"override {item!r}: expected key=value")
        if head in SECTIONS:
            run_overrides.append(item)
        elif head in ("seeds", "inputs", "convergence", "evaluate_repeats"):
            node = raw
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = yaml.safe_load(value) if value != "" else None
        else:
            raise ValueError(f"override {item!r}: expected a run-config key ({', '.join(SECTIONS)}) or seeds / inputs.* / "
                             "convergence.* / evaluate_repeats")
    run = raw.get("run")
    run_cfg = check_config(copy.deepcopy(run), f"{where}: run") if isinstance(run, dict) else load_config(run)
    run_cfg = apply_overrides(run_cfg, run_overrides)
    methods = tuple(MethodSpec(**{**m, "overrides": tuple(m.get("overrides") or ())}) for m in raw.get("methods") or [])
    conv = {**_CONVERGENCE_DEFAULTS, **(raw.get("convergence") or {})}
    unknown = set(conv) - set(_CONVERGENCE_DEFAULTS)
    if unknown:
        raise ValueError(f"{where}: convergence: unknown key(s) {sorted(unknown)}; expected some of "
                         f"{sorted(_CONVERGENCE_DEFAULTS)}")
    repeats = raw.get("evaluate_repeats", EVALUATE_REPEATS)
    return CompareConfig(run=run_cfg, methods=methods, seeds=tuple(int(s) for s in raw.get("seeds") or [0]),
                         inputs={**_INPUT_DEFAULTS, **(raw.get("inputs") or {})}, **conv,
                         evaluate_repeats=EVALUATE_REPEATS if repeats is None else repeats)


@dataclass
class RunTask:
    """One run of the plan: its config (sequence / salience paths filled in by :meth:`resolve`), its folder,
    and, for the second stage of ``ram+``, the checkpoint it starts from."""

    method: str
    kind: str
    seed: int
    stage: str  # "train" or "pretrain"
    run_dir: Path
    config: dict
    init_from: Optional[Path] = None
    needs: Optional[str] = None  # the input to make first: "nogs", "ps-ram", "hgs", "salient", "random",
    # "salience", "file" or None

    @property
    def done(self) -> bool:
        """Trained and tested as far as its config asks (less far: it is to be continued)."""
        try:
            results = json.loads((self.run_dir / "results.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        return run_finished(results, self.config["train"])

    @property
    def sampled_dir(self) -> Path:
        """Where the sampled evaluation of the run's best checkpoint goes (``results.json``, ``records/``)."""
        return self.run_dir / SAMPLED


def finished_iterations(run_dir: Path) -> Optional[int]:
    """The iterations a run folder's ``results.json`` was trained for; None without one."""
    try:
        return trained_iterations(json.loads((Path(run_dir) / "results.json").read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_finished(results: dict, train: dict) -> bool:
    """True if a run's results dict is of training as far as the ``train`` settings ask: all
    ``iterations``, or fewer where its patience ran out (``training.settled``) under the same patience."""
    iterations = trained_iterations(results)
    if iterations is None:
        return False
    if iterations == train["iterations"]:
        return True
    training = results["training"]
    return (bool(training.get("settled")) and iterations < train["iterations"]
            and training.get("patience") == train.get("patience"))


def trained_iterations(results) -> Optional[int]:
    """The iterations of a run's results dict (``results.json``'s ``training.iterations``), or None."""
    training = results.get("training") if isinstance(results, dict) else None
    return training.get("iterations") if isinstance(training, dict) else None


def method_config(cfg: CompareConfig, method: MethodSpec, seed: int, stage: str = "train") -> dict:
    """The run config of one method, seed and stage (input paths are placeholders until resolved)."""
    run = apply_overrides(copy.deepcopy(cfg.run), list(method.overrides))
    run["train"]["seed"] = seed
    _, base = split_name(run["algorithm"])
    T = base.get("num_glimpses", 6)
    if method.kind == "wsram":
        name = run["model"]["name"]
        if name not in WAKE_SLEEP_MODELS:
            raise ValueError(f"methods: {method.name!r}: wake-sleep needs a model of {sorted(WAKE_SLEEP_MODELS)}, "
                             f"found {name!r}")
        run["model"]["name"] = WAKE_SLEEP_MODELS[name]
        keep = {k: base[k] for k in ("eval_policy", "test_samples") if k in base}
        run["algorithm"] = {"name": "wake-sleep", "num_glimpses": T, **keep, **method.algorithm}
    elif method.kind == "ps":
        run["algorithm"] = {"name": "partial-supervision", **base, "sequences": "<resolved>",
                            "num_sequences": cfg.inputs["num_sequences"], **method.algorithm}
    elif method.kind == "ram+" and stage == "pretrain":
        iterations = cfg.inputs["pretrain_iterations"]
        run["algorithm"] = {"name": "salience-pretraining", "num_glimpses": T, "salience": "<resolved>",
                            "uniform_mix": cfg.inputs["uniform_mix"]}
        run["train"].update(iterations=iterations, val_every=min(run["train"].get("val_every", 500), iterations))
        run["evaluate"]["figures"] = False
    else:
        run["algorithm"] = {"name": "reinforce", **base, **method.algorithm}
    return run


def plan_runs(cfg: CompareConfig, out: Path) -> list[RunTask]:
    """Every run of the comparison in the order they are trained: seed by seed, methods in config order."""
    tasks = []
    for seed in cfg.seeds:
        for m in cfg.methods:
            folder = out / "runs" / slug(m.name) / f"seed-{seed}"
            if m.kind == "ram+":
                pre = folder / "pretrain"
                tasks.append(RunTask(m.name, m.kind, seed, "pretrain", pre, method_config(cfg, m, seed, "pretrain"),
                                     needs="salience"))
                tasks.append(RunTask(m.name, m.kind, seed, "train", folder, method_config(cfg, m, seed),
                                     init_from=pre / "checkpoints" / "last"))
                continue
            needs = None
            if m.kind == "ps":
                needs = m.sequences if m.sequences in SEQUENCE_SOURCES else "file"
            tasks.append(RunTask(m.name, m.kind, seed, "train", folder, method_config(cfg, m, seed), needs=needs))
    return tasks
