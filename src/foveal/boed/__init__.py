"""Near-optimal glimpse sequences by Bayesian optimal experimental design (Harvey et al. 2021).

* :mod:`foveal.boed.epe` - the expected-posterior-entropy estimator (Eq. 6) and the greedy sequence;
  the two protocols it depends on, :class:`Posterior` and :class:`CompletionSampler` (seam 4).
* :mod:`foveal.boed.posterior` - the attentional variational posterior CNN ("posterior-cnn") and
  :class:`NetworkPosterior`, the protocol adapter around any masked-input network.
* :mod:`foveal.boed.training` - its training algorithm ("posterior", Eq. 7) and accuracy-vs-glimpses curve.
* :mod:`foveal.boed.bank` - the image bank and the PCA-accelerated importance-sampling completion sampler.
* :mod:`foveal.boed.sequences` - glimpse-sequence files (and :mod:`foveal.boed.official`, the released text format).
* :mod:`foveal.boed.annotate` - the resumable, shardable annotator writing them; its settings are in
  :mod:`foveal.boed.annotate_config`.
"""

from foveal.boed.epe import (CompletionSampler, FirstGlimpse, GlimpseSequence, Posterior, cell_masks,
                             expected_posterior_entropy, first_glimpse, greedy_sequence, posterior_entropy,
                             posterior_log_prob)
from foveal.boed.posterior import NetworkPosterior, PosteriorCNN, PosteriorCNNConfig, expand_first_conv
from foveal.boed.sequences import GlimpseSequences, export_official, import_official
from foveal.boed.annotate import AnnotateConfig, annotate, merge_shards

__all__ = ["CompletionSampler", "FirstGlimpse", "GlimpseSequence", "Posterior", "cell_masks",
           "expected_posterior_entropy", "first_glimpse", "greedy_sequence", "posterior_entropy",
           "posterior_log_prob", "NetworkPosterior", "PosteriorCNN", "PosteriorCNNConfig", "expand_first_conv",
           "GlimpseSequences", "export_official", "import_official", "AnnotateConfig", "annotate", "merge_shards"]
