"""Near-optimal glimpse sequences by Bayesian optimal experimental design (Harvey et al. 2021).

* :mod:`foveal.boed.epe` - the expected-posterior-entropy estimator (Eq. 6) and the greedy sequence;
  the two protocols it depends on, :class:`Posterior` and :class:`CompletionSampler` (seam 4).
* :mod:`foveal.boed.posterior` - :class:`NetworkPosterior`, the protocol adapter around any masked-input
  network (the networks themselves are models: :mod:`foveal.models.posterior_cnn`,
  :mod:`foveal.models.densenet_posterior`; their training algorithm is :mod:`foveal.training.posterior`).
* :mod:`foveal.boed.local` - exact local updates of a posterior CNN's logits, one cell at a time.
* :mod:`foveal.boed.bank` - the image bank; :mod:`foveal.boed.completion` the PCA-accelerated
  importance-sampling completion sampler over it.
* :mod:`foveal.boed.annotate` - the resumable, shardable annotator writing glimpse-sequence files
  (:mod:`foveal.sequences`); its settings are in :mod:`foveal.boed.annotate_config`.
* :mod:`foveal.boed.makers` - the annotator as the sequence makers ``nogs``, ``hindsight`` and
  ``hindsight-label``, registered in :data:`foveal.sequences.MAKERS` on import (the baselines it is compared
  with are makers there too).
"""

from foveal.boed.annotate import AnnotateConfig, annotate, merge_shards
from foveal.boed.epe import (CompletionSampler, FirstGlimpse, GlimpseSequence, Posterior, cell_masks,
                             expected_label_cross_entropy, expected_posterior_entropy, first_glimpse, greedy_sequence)
from foveal.boed.makers import hindsight_label_sequences, hindsight_sequences, nogs_sequences
from foveal.boed.posterior import NetworkPosterior

__all__ = ["CompletionSampler", "FirstGlimpse", "GlimpseSequence", "Posterior", "cell_masks",
           "expected_posterior_entropy", "expected_label_cross_entropy", "first_glimpse", "greedy_sequence",
           "NetworkPosterior", "AnnotateConfig", "annotate", "merge_shards", "nogs_sequences", "hindsight_sequences",
           "hindsight_label_sequences"]
