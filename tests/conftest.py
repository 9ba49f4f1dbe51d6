"""Shared test fixtures."""

import importlib.util
from pathlib import Path

import pytest
import torch

from foveal.boed.bank import ImageBank
from foveal.checkpoint import save_checkpoint
from foveal.models import create_model, model_spec


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the tiny networks of these tests are slower with several threads on
    a busy 2-core machine (threads waiting on each other), and timings in them become noise."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def annotation_inputs(tmp_path_factory):
    """A folder with what the annotator reads: a 30-image bank of 8x8 noise (+ mirrors, ``bank.npy``) and a
    tiny posterior CNN checkpoint (``posterior``) whose first convolution, mask channel too, is random, so
    that its maps depend on where one looks."""
    root = tmp_path_factory.mktemp("annotation-inputs")
    g = torch.Generator().manual_seed(1)
    ImageBank.from_generator(lambda b: torch.rand(b, 1, 8, 8, generator=g), 30, root / "bank.npy", flips=True)
    torch.manual_seed(2)
    net = create_model("posterior-cnn", in_channels=1, num_classes=3, image_size=(8, 8), widths=(4,), strides=(1,))
    with torch.no_grad():
        net.first_conv.weight.normal_()
    save_checkpoint(root / "posterior", model=net, info={"model": model_spec(net)}, rng=False)
    return root


@pytest.fixture(scope="module")
def benchmark_script():
    """Import a script under ``benchmarks/`` by its path (``"ps-nogs/report.py"``): the folders are not packages."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(relative: str):
        path = root / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
