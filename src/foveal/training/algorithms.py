"""Training algorithms by name: ``build_algorithm("reinforce", num_glimpses=6)``.

Importing this module registers every built-in algorithm in :data:`ALGORITHMS`
(:mod:`foveal.training.base`): each is a class registered where it is defined, with the frozen dataclass of
its settings; the engine, the CLI and ``foveal compare`` pick them up by name. An algorithm of one's own
registers the same way, ``@ALGORITHMS.register("name", config=MyConfig)``, and must satisfy
:class:`foveal.training.base.Algorithm` (which :func:`build_algorithm` checks).
"""

from __future__ import annotations

from foveal.training import image_classification as _image_classification  # noqa: F401  (registers them)
from foveal.training import partial_supervision as _partial_supervision  # noqa: F401
from foveal.training import posterior as _posterior  # noqa: F401
from foveal.training import reinforce as _reinforce  # noqa: F401
from foveal.training import saccader as _saccader  # noqa: F401
from foveal.training import salience_pretraining as _salience_pretraining  # noqa: F401
from foveal.training import wake_sleep as _wake_sleep  # noqa: F401
from foveal.training.base import ALGORITHMS, build_algorithm

__all__ = ["ALGORITHMS", "build_algorithm"]
