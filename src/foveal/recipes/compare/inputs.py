"""The inputs a comparison's methods need, made once and kept in ``<out>/inputs/``.

* ``nogs`` - the annotator's sequence file (``inputs.nogs``), checked against the training split and the
  model's grid before any run starts.
* ``ps-ram-seed<s>-n<n>`` - sequences sampled from the policy of the finished RAM run of seed ``s``
  (``inputs.ps_ram_source: auto``), or ``ps-ram-n<n>`` from a given checkpoint.
* ``hgs-n<n>`` - hand-crafted sequences from CUB parts, or from the points of ``inputs.hgs_points``.
* ``salient-n<n>`` / ``random-n<n>`` - Sobel-salient / uniformly random cells of the model's grid for the
  supervised images (:data:`foveal.sequences.MAKERS` ``salient`` and ``random``, seed 0): the baselines
  NOGS must beat as supervision. Cheap and deterministic, made by :meth:`ComparisonInputs.preflight`.
* ``salience-<mode>.npz`` - RAM+'s salience maps of the training split, from ``inputs.posterior``.

Supervised methods share their images: the first ``num_sequences`` of the NOGS file, or, without one, a
fixed random subset (seed 0) of the training split. Files are written atomically and reused when they
exist (their names carry what would make them differ). The generated ones (:data:`MADE`) are each made
by one step of :mod:`foveal.recipes.compare.graph` (:meth:`ComparisonInputs.make`), so that tasks
running side by side never make the same file twice; :meth:`ComparisonInputs.preflight` makes the
stand-in NOGS file in the process that starts them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection, Optional

import torch

from foveal.models import load_model
from foveal.recipes.compare.config import BASELINES, SEQUENCE_SOURCES, CompareConfig, RunTask, slug
from foveal.recipes.experiment import build_data, build_model
from foveal.retina import LocationGrid
from foveal.sequences import (MAKERS, GlimpseSequences, Target, hgs_sequences, points_sequences, policy_sequences,
                              random_cells, sequence_paths)
from foveal.training.salience_pretraining import SalienceMaps, compute_salience

__all__ = ["ComparisonInputs", "MADE"]

MADE = ("salience", "ps-ram", "hgs")  # the inputs generated from data, runs or annotations (not given as files)
_NO_HGS = "no part annotations in the data and no inputs.hgs_points"


class ComparisonInputs:
    """Makes and checks the inputs of one comparison (module docstring); ``log(message)`` reports progress."""

    def __init__(self, cfg: CompareConfig, out: Path, log: Callable[[str], None] = lambda message: None) -> None:
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.folder = self.out / "inputs"
        self._train = self._model = self._nogs = None

    # ------------------------------------------------------------------------------- shared pieces
    @property
    def train_set(self):
        if self._train is None:
            self._train = build_data(self.cfg.run, ("train",))["train"]
        return self._train

    @property
    def model(self):
        """An untrained model of the comparison's architecture (for its grid, glimpse size, ...)."""
        if self._model is None:
            self._model = build_model(self.cfg.run, self.train_set)
        return self._model

    @property
    def num_glimpses(self) -> int:
        return int(self.cfg.run["algorithm"].get("num_glimpses", 6))

    @property
    def n(self) -> int:
        return int(self.cfg.inputs["num_sequences"])

    def nogs(self):
        """The NOGS file, checked against the training split, the model's grid and T (or None)."""
        path = self.cfg.inputs["nogs"]
        if path is None and self.cfg.inputs["stand_ins"]:
            path = self._stand_in_sequences()
        if path is None:
            return None
        if self._nogs is None:
            seqs = GlimpseSequences.load(path, dataset=self.train_set)
            self._check_sequences(seqs, "inputs.nogs")
            self._nogs = seqs
        return self._nogs

    def _check_sequences(self, seqs, what: str) -> None:
        if seqs.num_glimpses < self.num_glimpses:
            raise ValueError(f"{what} ({seqs.source}): {seqs.num_glimpses} glimpses per image, fewer than the run "
                             f"config's algorithm.num_glimpses={self.num_glimpses}")
        grid = getattr(self.model, "grid", None)
        if grid is not None:
            locations = seqs.locations()[:, :self.num_glimpses]
            snapped = grid.locations()[grid.nearest_index(locations)]
            if (snapped - locations).abs().max() > 1e-4:
                made_on = "" if seqs.grid is None else f" (made on rows {seqs.grid.rows[:4]}..., {seqs.grid.glimpse_size} px)"
                raise ValueError(f"{what} ({seqs.source}): its glimpses are not cells of the model's grid (rows "
                                 f"{grid.rows[:4]}..., {grid.glimpse_size} px){made_on}; set model.grid_stride / "
                                 "model.grid / model.glimpse_size in run_overrides to the file's grid")

    def _stand_in_sequences(self) -> Path:
        """Random sequences on the model's grid for a fixed random subset: a smoke-run stand-in for NOGS."""
        path = self.folder / f"stand-in-nogs-n{self.n}"
        if not sequence_paths(path)[0].exists():
            train, grid = self.train_set, self.grid()
            N = len(train)
            indices = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:min(self.n, N)].sort().values
            cells = random_cells(len(indices), grid, self.num_glimpses, generator=torch.Generator().manual_seed(1))
            GlimpseSequences(train.name, train.split, tuple(train.image_shape[1:]), grid.glimpse_size, indices,
                             grid.corners()[cells], grid=grid, method="random",
                             provenance={"stand_in": "random sequences in place of NOGS (inputs.stand_ins)"}).save(path)
            self.log(f"stand-in: random sequences in place of NOGS at {path}")
        return path

    def grid(self):
        """The model's grid, or for a model without one a grid of glimpses ``salience_stride`` px apart."""
        grid = getattr(self.model, "grid", None)
        if grid is None:
            g = self.model.config.glimpse_size
            stride = self.cfg.inputs["salience_stride"] or max(1, g // 2)
            grid = LocationGrid.from_stride(tuple(self.train_set.image_shape[1:]), g, stride)
        return grid

    def indices(self) -> torch.Tensor:
        """int64 ``[n]`` training positions every supervised method uses."""
        nogs = self.nogs()
        if nogs is not None:
            return nogs.subset(self.n).indices
        N = len(self.train_set)
        return torch.randperm(N, generator=torch.Generator().manual_seed(0))[:min(self.n, N)].sort().values

    # ---------------------------------------------------------------------------------- generated
    def path_of(self, need: str, seed: Optional[int] = None) -> Path:
        """Where the input ``need`` (one of :data:`MADE`; ``ps-ram`` of ``seed``) is kept; reads nothing."""
        if need == "salience":
            return self.folder / f"salience-{self.cfg.inputs['salience_mode']}.npz"
        if need == "ps-ram":
            auto = self.cfg.inputs["ps_ram_source"] == "auto"
            return self.folder / (f"ps-ram-seed{seed}-n{self.n}" if auto else f"ps-ram-n{self.n}")
        if need == "hgs":
            return self.folder / f"hgs-n{self.n}"
        raise ValueError(f"input {need!r}: expected one of {MADE}")

    def made(self, need: str, seed: Optional[int] = None) -> bool:
        """Whether the input ``need`` exists (a sequence file's JSON header is written last)."""
        path = self.path_of(need, seed)
        return (path if need == "salience" else sequence_paths(path)[0]).exists()

    def make(self, need: str, seed: Optional[int] = None) -> Optional[str]:
        """Make the input ``need`` (:data:`MADE`) unless it exists; a reason its runs are skipped, or None."""
        if need == "salience":
            self.salience()
        elif need == "ps-ram":
            self.ps_ram(seed)
        elif self.hgs() is None:
            return _NO_HGS
        return None

    def ps_ram(self, seed: int) -> Path:
        source = self.cfg.inputs["ps_ram_source"]
        path = self.path_of("ps-ram", seed)
        if source == "auto":
            ram = next((m for m in self.cfg.methods if m.kind == "ram"), None)
            if ram is None:
                raise ValueError("inputs.ps_ram_source: 'auto' samples PS-RAM's sequences from the comparison's RAM "
                                 "runs, but no method has kind ram; add one or give a checkpoint")
            run = self.out / "runs" / slug(ram.name) / f"seed-{seed}"
            if not (run / "results.json").exists():
                raise ValueError(f"PS-RAM (seed {seed}) samples from the finished run {run}, which is not finished; "
                                 f"list {ram.name!r} before the PS-RAM method, or train it first")
            checkpoint = run / "checkpoints" / "best"
        else:
            checkpoint = Path(source)
        if not sequence_paths(path)[0].exists():
            self.log(f"sampling PS-RAM sequences for {self.n} images from {checkpoint}")
            model, _ = load_model(checkpoint)
            target = Target(self.train_set, self.indices(), self.num_glimpses)
            seqs = policy_sequences(target, model=model, seed=seed, provenance={"source": str(checkpoint)})
            self._check_sequences(seqs, "PS-RAM")
            seqs.save(path)
        return path

    def hgs(self) -> Optional[Path]:
        """The PS-HGS file, or None when the data has neither part annotations nor ``inputs.hgs_points``."""
        points = self.cfg.inputs["hgs_points"]
        has_parts = bool(getattr(self.train_set, "part_names", None))
        if points is None and not has_parts:
            return None
        path = self.path_of("hgs")
        if not sequence_paths(path)[0].exists():
            grid = getattr(self.model, "grid", None)
            g = self.model.config.glimpse_size
            if points is not None:
                seqs = points_sequences(points, self.train_set, glimpse_size=g, grid=grid, method="hgs")
            else:
                self.log(f"making PS-HGS sequences from part annotations for {self.n} images")
                seqs = hgs_sequences(self.train_set, self.indices().tolist(), glimpse_size=g, grid=grid)
            self._check_sequences(seqs, "PS-HGS")
            seqs.save(path)
        return path

    def baseline(self, method: str) -> Path:
        """The ``salient`` or ``random`` sequences of the supervised images on the model's grid (made once)."""
        path = self.folder / f"{method}-n{self.n}"
        if not sequence_paths(path)[0].exists():
            indices = self.indices()
            self.log(f"making {method} sequences for {len(indices)} images")
            target = Target(self.train_set, indices, self.num_glimpses, self.grid())
            seqs = MAKERS.build(method, target)  # the defaults: edge saliency; random cells of seed 0
            self._check_sequences(seqs, f"{method} sequences")
            seqs.save(path)
        return path

    def salience(self) -> Path:
        posterior = self.cfg.inputs["posterior"]
        mode = self.cfg.inputs["salience_mode"]
        path = self.path_of("salience")
        if path.exists():
            return path
        grid = self.grid()
        if posterior is None and self.cfg.inputs["stand_ins"]:
            train = self.train_set
            maps = SalienceMaps(torch.rand(len(train), len(grid), generator=torch.Generator().manual_seed(0)), grid,
                                train.name, train.split, mode, {"stand_in": "random maps (inputs.stand_ins)"})
            self.log("stand-in: random salience maps in place of a posterior's")
            return maps.save(path)
        if posterior is None:
            raise ValueError("RAM+ needs a trained posterior network for its salience maps: set "
                             "inputs.posterior=<checkpoint> (e.g. from foveal train --config posterior-...)")
        network, _ = load_model(posterior)
        total = len(self.train_set)
        self.log(f"computing {mode} salience maps of {total} training images on a {grid.shape[0]}x{grid.shape[1]} grid")
        shown = [0]

        def progress(done: int, total: int) -> None:  # a line per tenth
            if done * 10 // total > shown[0]:
                shown[0] = done * 10 // total
                self.log(f"  salience: {done}/{total} images")

        maps = compute_salience(network, self.train_set, grid, mode=mode, progress=progress,
                                provenance={"posterior": str(posterior)})
        return maps.save(path)

    # ---------------------------------------------------------------------------------- per task
    def preflight(self, methods: Optional[Collection[str]] = None) -> None:
        """Fail before any training when the inputs of a method to train (``methods``, names; None: every
        method of the config) are missing or do not fit; makes the stand-in NOGS file (``inputs.stand_ins``),
        which every supervised method's input starts from."""
        chosen = [m for m in self.cfg.methods if methods is None or m.name in methods]
        kinds = {m.kind for m in chosen}
        sources = {m.sequences for m in chosen if m.kind == "ps"}
        nogs = self.nogs() if sources else None  # checked (or a stand-in made) here, once, before any task
        if "nogs" in sources and nogs is None:
            raise ValueError("a PS-NOGS method needs the NOGS sequence file: set inputs.nogs=<file> (foveal annotate)")
        if "ram+" in kinds and self.cfg.inputs["posterior"] is None and not self.cfg.inputs["stand_ins"] and not (
                self.folder / f"salience-{self.cfg.inputs['salience_mode']}.npz").exists():
            raise ValueError("RAM+ needs a trained posterior network for its salience maps: set "
                             "inputs.posterior=<checkpoint>")
        if "ps-ram" in sources and self.cfg.inputs["ps_ram_source"] == "auto":
            order = [m.kind for m in self.cfg.methods]
            first_ps_ram = next(i for i, m in enumerate(self.cfg.methods) if m.sequences == "ps-ram")
            if "ram" not in order[:first_ps_ram]:
                raise ValueError("PS-RAM samples from the comparison's RAM runs (inputs.ps_ram_source: auto): list a "
                                 "method of kind ram before it, or give a checkpoint")
        for method in BASELINES:
            if method in sources:
                self.baseline(method)
        for m in chosen:
            if m.kind == "ps" and m.sequences not in SEQUENCE_SOURCES:
                self._check_sequences(GlimpseSequences.load(m.sequences, dataset=self.train_set), f"{m.name} sequences")

    def resolve(self, task: RunTask) -> Optional[str]:
        """Fill the task's input paths in its config (making the inputs); a reason to skip it, or None."""
        alg = task.config["algorithm"]
        if task.needs == "salience":
            alg["salience"] = str(self.salience().resolve())
        elif task.needs == "nogs":
            seqs = self.nogs()
            if seqs is None:
                raise ValueError(f"{task.method}: needs the NOGS sequence file: set inputs.nogs=<file> (foveal annotate)")
            alg["sequences"] = str(Path(seqs.source).resolve())
        elif task.needs == "ps-ram":
            alg["sequences"] = str(self.ps_ram(task.seed).resolve())
        elif task.needs == "hgs":
            path = self.hgs()
            if path is None:
                return _NO_HGS
            alg["sequences"] = str(path.resolve())
        elif task.needs in BASELINES:
            alg["sequences"] = str(self.baseline(task.needs).resolve())
        elif task.needs == "file":
            spec = self.cfg.method(task.method).sequences
            self._check_sequences(GlimpseSequences.load(spec, dataset=self.train_set), f"{task.method} sequences")
            alg["sequences"] = str(Path(spec).resolve())
        return None
