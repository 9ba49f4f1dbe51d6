"""Glimpse sequences: where to look on each image of a dataset split, T glimpses per image.

A sequence set is the currency between whoever chooses glimpses and whoever learns from them: the
annotator's near-optimal sequences (NOGS), baselines, a trained model's own choices and the sequences
released with Harvey et al. (2021) all become one :class:`GlimpseSequences`, and partial supervision
(:mod:`foveal.training.partial_supervision`) forces a glimpse model to look along it. For ``N`` images of
one split it holds each image's position in the split (``indices [N]``) and the top-left pixel of each of
its ``T`` glimpses (``corners [N, T, 2]``, row first, the released sequences' convention), with the grid
they lie on, the image ids, what the sequences were made for (``task``, e.g. a CelebA attribute), the
``method`` that made them and how (``provenance``). :meth:`GlimpseSequences.locations` gives glimpse
centres in [-1, 1] as models take them; :meth:`GlimpseSequences.lookup` a batch's forced locations.

* :mod:`~foveal.sequences.format` - the file (``<name>.json`` + ``<name>.safetensors``, written atomically,
  the JSON naming the tensors' SHA-256), reading, writing, merging shards, and validation against the
  built split it names (dataset, split, image size, index range, ids, task).
* :mod:`~foveal.sequences.official` - the released text layouts (one ``.txt`` per image, lines ``r, c``),
  imported and exported back byte for byte.
* :mod:`~foveal.sequences.makers` - the maker interface, ``maker(Target, **settings) -> GlimpseSequences``,
  and :data:`MAKERS`, the registry of makers by the ``method`` they record: ``salient``, ``random``,
  ``ps-ram`` (a trained policy), and ``nogs`` / ``hindsight`` / ``hindsight-label`` (the annotator,
  registered by :mod:`foveal.boed` when it is imported).
* :mod:`~foveal.sequences.handmade` - sequences whose length the hand decides: PS-HGS from part annotations,
  user files of glimpse centres.
* :mod:`~foveal.sequences.scoring` - sets of sequences scored side by side by a network that did not choose
  them, paired image by image, with bootstrap intervals (the networks' curves:
  :mod:`foveal.evaluation.sequence_quality`).

Layers (``tests/test_layers.py``): the package imports the foundations, :mod:`foveal.data` (its errors) and
the policy registry (``ps-ram`` rolls a model out under a named policy), so it sits after policies and
before training, the annotator and evaluation, which all import it and which it never imports. On the
command line it is ``foveal sequences info|validate|export|import|merge|make|score``.
"""

from foveal.sequences.format import FORMAT, VERSION, GlimpseSequences, sequence_paths
from foveal.sequences.handmade import HGS_PARTS, hgs_sequences, points_sequences, points_to_corners
from foveal.sequences.makers import (MAKERS, SequenceMaker, Target, policy_sequences, random_cells, random_sequences,
                                     salient_cells, salient_sequences)
from foveal.sequences.official import (CELEBA_HQ_LAYOUT, CUB_LAYOUT, EXPORT_LAYOUTS, FOVEAL_LAYOUT, MATCH_MODES,
                                       TextLayout, export_official, import_official, read_image_map)
from foveal.sequences.scoring import Scorer, compare_sequences, paired_bootstrap

__all__ = ["FORMAT", "VERSION", "GlimpseSequences", "sequence_paths",
           "TextLayout", "CELEBA_HQ_LAYOUT", "CUB_LAYOUT", "FOVEAL_LAYOUT", "EXPORT_LAYOUTS", "MATCH_MODES",
           "export_official", "import_official", "read_image_map",
           "MAKERS", "SequenceMaker", "Target", "salient_sequences", "random_sequences", "policy_sequences",
           "salient_cells", "random_cells", "HGS_PARTS", "hgs_sequences", "points_sequences", "points_to_corners",
           "Scorer", "paired_bootstrap", "compare_sequences"]
