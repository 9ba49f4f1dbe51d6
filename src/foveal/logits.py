r"""What a classifier's logits say as a distribution over labels, for every network that gives them.

A network's ``[B, K]`` logits are read as one **categorical** label (softmax over K classes) or, for a
``multilabel`` network (CelebA attributes), as K **independent binary** attributes (a sigmoid each). The
annotator's expected posterior entropy (:mod:`foveal.boed.epe`), the salience maps of RAM+'s pretraining
(:mod:`foveal.training.salience_pretraining`) and the scores of sequences and posteriors
(:mod:`foveal.evaluation`) all read them through these two functions:

.. math::

    H[q] = -\sum_k p_k \log p_k \quad (\text{categorical}), \qquad
    H[q] = \sum_k h(\sigma(z_k)),\ h(p) = -p \log p - (1 - p) \log(1 - p) \quad (\text{multilabel}).

Both are functions of logits alone, so they sit with the foundations, below every network that gives them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["posterior_entropy", "posterior_log_prob"]


def posterior_entropy(logits: Tensor, multilabel: bool = False) -> Tensor:
    """``[B, K]`` logits -> ``[B]`` entropy in nats (sum of binary entropies if ``multilabel``)."""
    if multilabel:
        p = torch.sigmoid(logits)
        return (torch.special.entr(p) + torch.special.entr(torch.sigmoid(-logits))).sum(-1)
    return torch.special.entr(torch.softmax(logits, dim=-1)).sum(-1)  # entr(0) = 0: -inf logits are fine


def posterior_log_prob(logits: Tensor, labels: Tensor, multilabel: bool = False) -> Tensor:
    """``log q(labels | glimpses)``: ``[B, K]`` logits and ``[B]`` classes (or ``[B, K]`` 0/1 attributes) -> ``[B]``."""
    if multilabel:
        return -torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").sum(-1)
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.long()[:, None])[:, 0]
