"""The Saccader's three training stages as one recipe (Elsayed et al. 2019, section 3.2).

Each stage is an ordinary run (:func:`foveal.recipes.run.train_run`) of one of the algorithms in
:mod:`foveal.training.saccader` (``saccader-representation``, ``saccader-location``,
``saccader-reinforce``), in its own folder, starting from the previous stage's best checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from foveal.recipes.run import train_run

__all__ = ["STAGES", "run_stages"]

STAGES = ("representation", "location", "reinforce")


def run_stages(configs: dict[str, dict], run_dir, *, stages: tuple[str, ...] = STAGES, progress=None,
               on_stage=None, test: bool = True) -> dict[str, Optional[dict]]:
    """Train the stages in order, each in ``run_dir/<stage>``, each starting from the previous one's best.

    A stage whose config has no ``model.init_from`` gets the previous stage's
    ``run_dir/<previous>/checkpoints/best`` (a stage run earlier, or in this call). Every stage is an
    ordinary run folder: calling this again resumes where it stopped and skips finished stages'
    training (the engine finds them at their last iteration), re-evaluating their best checkpoint.

    Args:
        configs: a full run config (:mod:`foveal.config`) per stage name in ``stages``.
        progress: passed to :func:`foveal.recipes.run.train_run`.
        on_stage: ``on_stage(stage, run_folder)`` before each stage starts.
        test: evaluate each stage's best checkpoint on the config's ``evaluate.split`` (the whole split)
            as :func:`foveal.recipes.run.train_run` does; False only trains (and validates).

    Returns:
        ``{stage: results dict of train_run}``, or ``{stage: None}`` without ``test``.
    """
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: expected some of {STAGES}, found {unknown}")
    run_dir = Path(run_dir)
    results = {}
    for stage in stages:
        cfg = {k: dict(v) for k, v in configs[stage].items()}
        previous = STAGES.index(stage) - 1
        if previous >= 0 and not cfg["model"].get("init_from"):
            cfg["model"]["init_from"] = str(run_dir / STAGES[previous] / "checkpoints" / "best")
        if on_stage is not None:
            on_stage(stage, run_dir / stage)
        results[stage] = train_run(cfg, run_dir / stage, progress=progress, test=test)
    return results
