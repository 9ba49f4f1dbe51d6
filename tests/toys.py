"""Small stand-ins that several test files share: the checks every dataset's items pass, and the annotator's
toy split and settings (with the bank and posterior of tests/conftest.py's ``annotation_inputs``)."""

import torch


def check_items(ds, count=3):
    """Items match the dataset's declared shape, dtype, range and classes (and ``ds.labels``, if it has them)."""
    assert len(ds) > 0 and len(ds.class_names) == ds.num_classes
    for i in list(range(min(count, len(ds)))) + [len(ds) - 1]:
        item = ds[i]
        assert set(item) == {"image", "label", "index"} and item["index"] == i
        assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == ds.image_shape
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
        assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
        assert 0 <= int(item["label"]) < ds.num_classes
        if hasattr(ds, "labels"):
            assert int(item["label"]) == ds.labels[i]


class ToySplit:
    """10 random 8x8 images, 3 classes; counts how many images were read."""

    name, split, image_shape, num_classes = "toy", "train", (1, 8, 8), 3

    def __init__(self):
        self.images = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        self.reads = 0

    def __len__(self):
        return 10

    def __getitem__(self, i):
        self.reads += 1
        return {"image": self.images[i], "label": torch.tensor(i % 3), "index": i}


def toy_config(root, **changes):
    """The annotator's settings on :class:`ToySplit` with ``annotation_inputs`` (``root``): images 0..7, T = 2
    glimpses of 4 px every 2 px, 4 completions, chunks of 3."""
    from foveal.boed.annotate import AnnotateConfig  # the data tests use this module too

    settings = dict(dataset="toy", posterior=str(root / "posterior"), bank=str(root / "bank.npy"), count=8,
                    glimpse_size=4, grid_stride=2, num_glimpses=2, n_completions=4, n_proposals=10,
                    pca_components=4, chunk_size=3, seed=7)
    return AnnotateConfig(**{**settings, **changes})
