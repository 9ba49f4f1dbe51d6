"""foveal: hard visual attention in PyTorch."""

__version__ = "0.1.0"
