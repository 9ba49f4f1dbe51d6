"""A tiny registered dataset for the ``foveal compare`` tests: a bright 4x4 square in one of four quadrants."""

import numpy as np
import torch

from foveal.data import FovealDataset

SIZE = 16


class Squares(FovealDataset):
    """A bright 4x4 square in one of the four quadrants of a 16x16 image; the label is the quadrant."""

    def __init__(self, name, split, n):
        self.name, self.split, self.num_classes = name, split, 4
        self.image_shape, self.class_names = (1, SIZE, SIZE), ["tl", "tr", "bl", "br"]
        self.offset = {"train": 0, "val": 1000, "test": 2000}[split]
        self.labels = np.arange(n) % 4

    def load(self, i):
        g = torch.Generator().manual_seed(self.offset + i)
        image = 0.1 * torch.rand(1, SIZE, SIZE, generator=g)
        r, c = divmod(int(self.labels[i]), 2)
        dr, dc = (int(v) for v in torch.randint(0, 4, (2,), generator=g))
        image[0, 8 * r + dr:8 * r + dr + 4, 8 * c + dc:8 * c + dc + 4] = 1.0
        return image


def register_squares(name: str) -> dict:
    """Register ``Squares`` as dataset ``name`` (48 training images, 16 val / test) and return the run config
    of a tiny comparison on it: a 2-glimpse grid RAM trained for 6 iterations."""
    from foveal.data import DATASETS

    DATASETS.register(name, lambda split, *, root=None, seed=0: Squares(name, split, {"train": 48}.get(split, 16)),
                      summary=Squares.__doc__)
    return {"data": {"name": name},
            "model": {"name": "ram-grid", "glimpse_size": 4, "grid_stride": 4, "hidden_size": 16, "glimpse_hidden": 8,
                      "location_hidden": 8, "feature_size": 16},
            "algorithm": {"name": "reinforce", "num_glimpses": 2},
            "train": {"iterations": 6, "batch_size": 8, "lr": 0.01, "val_every": 3, "tensorboard": False},
            "evaluate": {"examples": 4, "figures": False, "batch_size": 16}}
