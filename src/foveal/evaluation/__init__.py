"""Evaluation outputs: saved records (glimpse ``.npz``, ``metrics.csv``) and the figures made from them.

Plots take saved records, never models, so every figure can be remade from a run folder alone.
"""

from foveal.evaluation.records import (
    GlimpseRecord,
    glimpse_coverage,
    load_glimpse_record,
    read_metrics,
    save_glimpse_record,
)
from foveal.evaluation.glimpse_plots import plot_glimpse_examples, plot_glimpse_heatmaps
from foveal.evaluation.plots import plot_accuracy_vs, plot_curves, plot_speedup, plot_training_summary

__all__ = [
    "GlimpseRecord", "glimpse_coverage", "load_glimpse_record", "read_metrics", "save_glimpse_record",
    "plot_accuracy_vs", "plot_curves", "plot_glimpse_examples", "plot_glimpse_heatmaps", "plot_speedup",
    "plot_training_summary",
]
