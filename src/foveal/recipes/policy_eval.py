"""Policy evaluation as a whole job (``foveal evaluate-policies``): methods built from checkpoints, the
occlusion CNN trained when none is given, then :mod:`foveal.evaluation.policy_eval`'s records, summary,
reports and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from foveal.checkpoint import load_checkpoint
from foveal.evaluation.budget import budget_evaluation, write_budget
from foveal.evaluation.policy_eval import Method, evaluate_methods, example_figures, summarise, write_reports
from foveal.models import create_model, load_model, model_spec
from foveal.policies import make_policy
from foveal.recipes.experiment import build_data
from foveal.training import TrainConfig, fit
from foveal.training.image_classification import ImageClassification

__all__ = ["run_policy_evaluation", "train_occluder"]


def train_occluder(data_config: dict[str, Any], run_dir: str | Path, *, iterations: int = 1500, batch_size: int = 64,
                   lr: float = 1e-3, seed: int = 0, device: str = "auto", progress=None) -> nn.Module:
    """Train (or resume, or just load) the occlusion analysis's full-image CNN (``small-cnn``) on the train split.

    ``run_dir`` is an ordinary engine run folder; the best checkpoint by validation accuracy is returned.
    """
    data = build_data({"data": data_config}, ("train", "val"))
    C, H, W = data["train"].image_shape
    torch.manual_seed(seed)  # as every run: the seed decides the initial weights
    model = create_model("small-cnn", in_channels=C, num_classes=data["train"].num_classes, image_size=(H, W))
    config = TrainConfig(iterations=iterations, batch_size=batch_size, lr=lr, lr_schedule="cosine", seed=seed,
                         val_every=max(iterations // 3, 1), val_batches=8, tensorboard=False, device=device)
    result = fit(model, ImageClassification(), data["train"], data["val"], config, run_dir, progress=progress,
                 info={"model": model_spec(model), "config": {"data": data_config}})
    load_checkpoint(result.best_checkpoint, model=model)
    return model.eval()


def run_policy_evaluation(out_dir: str | Path, *, classifier: Optional[str] = None, policies: Sequence[str] = (),
                          learned: Sequence[tuple[str, str]] = (), policy_of: Sequence[tuple[str, str]] = (),
                          max_glimpses: int = 12, train_glimpses: Optional[int] = None, split: str = "test",
                          limit: Optional[int] = None, batch_size: int = 250, occlusion: bool = True,
                          occluder_checkpoint: Optional[str] = None, occluder_iterations: int = 1500,
                          examples: int = 8, seed: int = 0, device: str = "cpu", progress=None,
                          exit_rule: str = "confidence", thresholds: Sequence[float] = ()) -> dict[str, Any]:
    """The whole ``foveal evaluate-policies`` job: methods from checkpoints, records, summary, reports, figures.

    Args:
        classifier: checkpoint of a grid model (``bagnet``, ``saccader``, ``saccader-patch``) that the
            named ``policies`` drive (:mod:`foveal.policies` names, except ``learned``).
        learned: ``(label, checkpoint)`` of glimpse models evaluated with their own policy and classifier.
        policy_of: ``(label, checkpoint)`` of models whose learned policy drives ``classifier``.
        train_glimpses: T used in training (dotted line; the Markdown table's area / occlusion column);
            default: the first checkpoint's ``algorithm.num_glimpses``.
        occlusion: also run the occlusion analysis, with ``occluder_checkpoint`` or a CNN trained here
            (``out_dir/occlusion-cnn``, ``occluder_iterations`` steps).
        exit_rule, thresholds: also evaluate every method under early exit up to ``max_glimpses``
            (:mod:`foveal.evaluation.budget`): ``out_dir/budget.{json,csv,md}`` and two figures.

    Returns:
        The summary dict (also ``out_dir/policy_eval.json``) with ``files`` listing what was written.
    """
    out_dir = Path(out_dir)
    methods, data_cfg, first_cfg = [], None, None

    def load(path: str) -> nn.Module:
        nonlocal data_cfg, first_cfg
        model, info = load_model(path)
        data_cfg = data_cfg or info["config"]["data"]
        first_cfg = first_cfg or info["config"]
        return model.to(device).eval()

    if (policies or policy_of) and classifier is None:
        raise ValueError("policies / policy_of: need a classifier checkpoint to drive")
    shared = load(classifier) if classifier else None
    for name in policies:
        if name == "learned":
            raise ValueError("policies: 'learned' needs a model; use learned=(label, checkpoint) or policy_of=")
        methods.append(Method(name, shared, make_policy(name, model=shared)))
    for label, path in policy_of:
        methods.append(Method(label, shared, make_policy("learned", model=load(path))))
    for label, path in learned:
        methods.append(Method(label, load(path), None))
    if not methods:
        raise ValueError("nothing to evaluate: give policies with a classifier, learned models or policy_of")
    dataset = build_data({"data": data_cfg}, (split,))[split]
    occluder = None
    if occlusion:
        if occluder_checkpoint:
            occluder = load_model(occluder_checkpoint)[0].to(device).eval()
        else:
            occluder = train_occluder(data_cfg, out_dir / "occlusion-cnn", iterations=occluder_iterations, seed=seed,
                                      device=device)
    if train_glimpses is None:
        train_glimpses = first_cfg.get("algorithm", {}).get("num_glimpses") if first_cfg else None
    records = evaluate_methods(methods, dataset, out_dir, max_glimpses=max_glimpses, batch_size=batch_size,
                               device=device, limit=limit, occluder=occluder, examples=examples, seed=seed,
                               progress=progress)
    summary = summarise(records, train_glimpses=train_glimpses)
    summary.update(dataset=dataset.name, split=split, max_glimpses=max_glimpses)
    files = write_reports(summary, out_dir)
    files += example_figures(records, out_dir, num_glimpses=train_glimpses)
    if thresholds:
        budgets = [budget_evaluation(m.model, dataset, rule=exit_rule, thresholds=thresholds, max_glimpses=max_glimpses,
                                     policy=m.policy, batch_size=batch_size, device=device, limit=limit, seed=seed,
                                     label=m.label) for m in methods]
        files += write_budget({"dataset": dataset.name, "split": split, "methods": budgets}, out_dir)
        summary["budget"] = {"rule": exit_rule, "thresholds": [float(t) for t in thresholds]}
    summary["files"] = [str(p) for p in files]
    (out_dir / "policy_eval.json").write_text(json.dumps(summary, indent=2))
    return summary
