"""Plain image classification as a training algorithm: cross-entropy of a model on whole images.

The occlusion analysis's full-image CNN (:func:`foveal.recipes.policy_eval.train_occluder`) trains
through the engine like any other model; it sees the whole image at once, which the algorithm
protocol records as one glimpse at the centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foveal.training.base import ALGORITHMS, EvaluationSettings, LossOutput

__all__ = ["ImageClassificationConfig", "ImageClassification"]


@dataclass(frozen=True)
class ImageClassificationConfig(EvaluationSettings):
    """Settings of :class:`ImageClassification`: none to choose; the evaluation settings are fixed at "one
    look at the whole image"."""

    num_glimpses: int = 1
    eval_policy: str = "center"

    def __post_init__(self) -> None:
        if (self.num_glimpses, self.eval_policy, self.test_samples) != (1, "center", 1):
            raise ValueError("ImageClassificationConfig: a whole-image classifier takes one look at the centre; "
                             f"found num_glimpses={self.num_glimpses!r}, eval_policy={self.eval_policy!r}, "
                             f"test_samples={self.test_samples!r}")
        super().__post_init__()


@ALGORITHMS.register("image-classification", config=ImageClassificationConfig)
class ImageClassification:
    """Cross-entropy on whole images, ``model(images [B, C, H, W]) -> logits [B, K]``."""

    def __init__(self, config: ImageClassificationConfig = ImageClassificationConfig()) -> None:
        self.config = config

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> LossOutput:
        logits = model(batch["image"])
        ce = F.cross_entropy(logits, batch["label"])
        accuracy = (logits.argmax(-1) == batch["label"]).float().mean()
        return LossOutput(ce, {"ce": ce.detach(), "accuracy": accuracy.detach()})

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Tensor, num_glimpses: Optional[int] = None) -> tuple[Tensor, Tensor]:
        """Probabilities ``[B, 1, K]`` and the one "location" ``[B, 1, 2]``, the centre."""
        probs = model(images).softmax(-1)[:, None]
        return probs, images.new_zeros(images.shape[0], 1, 2)

    @torch.no_grad()
    def metrics(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        logits = model(batch["image"])
        return {"accuracy": (logits.argmax(-1) == batch["label"]).float().mean().item(),
                "ce": F.cross_entropy(logits, batch["label"]).item()}
