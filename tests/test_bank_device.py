"""The bank search on an explicit device: on the CPU, exactly the default's numbers (a GPU is checked by
benchmarks/gpu/gpu_posterior.py, not here)."""

import pytest
import torch

from foveal.boed.annotate import load_posterior
from foveal.boed.bank import ImageBank
from foveal.boed.completion import BankSampler, CellPCA
from foveal.boed.epe import first_glimpse, greedy_sequence
from foveal.retina import LocationGrid, cell_masks

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

GRID = LocationGrid.from_stride((16, 16), 4, 4)  # 16 disjoint 4x4 cells
CPU_NAMES = ("cpu", torch.device("cpu"))


class DictStore:
    """A :class:`foveal.boed.completion.PCAStore` in memory."""

    def __init__(self):
        self.saved = {}

    def load(self, cell):
        return self.saved.get(cell)

    def save(self, cell, pca):
        return self.saved.setdefault(cell, pca)


def make_problem():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(70, 3, 16, 16, generator=g)
    bank = ImageBank.from_tensor(images, flips=True, dtype="uint8")
    truth = images[5]
    observed = torch.maximum(cell_masks(GRID)[0], cell_masks(GRID)[6])  # [1, 16, 16], two cells
    return bank, truth, observed


def samplers(bank, **options):
    """The default sampler and one per explicit CPU device name, all else alike (chunk 32: several blocks)."""
    return [BankSampler(bank, GRID, pca_components=5, n_proposals=40, chunk=32, **options)] + \
        [BankSampler(bank, GRID, pca_components=5, n_proposals=40, chunk=32, device=d, **options) for d in CPU_NAMES]


@pytest.mark.parametrize("options", [{}, {"shifts": 1}, {"target_ess": 0.5}, {"shifts": 2, "target_ess": 0.3}])
def test_explicit_cpu_device_gives_the_defaults_numbers(options):
    bank, truth, observed = make_problem()
    default, *explicit = samplers(bank, **options)
    assert default.device == torch.device("cpu") and all(s.device == torch.device("cpu") for s in explicit)
    cells = default.observed_cells(observed)
    expected = default.approximate_distances(truth, cells)
    want = default.weighted_candidates(truth * observed, observed)
    images, weights = default.sample(truth * observed, observed, 25, generator=torch.Generator().manual_seed(4))
    for sampler in explicit:
        assert torch.equal(sampler.approximate_distances(truth, cells), expected)
        for a, b in zip(sampler.weighted_candidates(truth * observed, observed), want):
            assert torch.equal(a, b)
        got = sampler.sample(truth * observed, observed, 25, generator=torch.Generator().manual_seed(4))
        assert torch.equal(got[0], images) and torch.equal(got[1], weights)
        assert got[0].device == truth.device and got[1].device == truth.device


def test_pca_fits_and_stores_agree_and_stay_on_the_host():
    bank, truth, observed = make_problem()
    stores = [DictStore() for _ in range(3)]
    made = [BankSampler(bank, GRID, pca_components=5, chunk=32, pca_store=store, device=device)
            for store, device in zip(stores, (None, *CPU_NAMES))]
    for sampler in made:
        sampler.cell_pca(6)
    for store in stores[1:]:
        for a, b in zip(vars(store.saved[6]).values(), vars(stores[0].saved[6]).values()):
            assert torch.equal(a, b) and a.device.type == "cpu"
    pca = stores[0].saved[6]
    assert pca.to(torch.device("cpu")) is pca  # nothing copied where it already is
    assert isinstance(pca, CellPCA)


def test_greedy_sequence_on_an_explicit_cpu_device_is_the_default(annotation_inputs):
    """The annotator's search (tests/conftest.py's bank and posterior), default sampler vs explicit CPU."""
    posterior, _ = load_posterior(annotation_inputs / "posterior", torch.device("cpu"))
    bank = ImageBank.open(annotation_inputs / "bank.npy")
    grid = LocationGrid.from_stride((8, 8), 4, 2)
    image = bank.images(torch.tensor([3]))[0]

    def run(device):
        sampler = BankSampler(bank, grid, pca_components=4, n_proposals=12, chunk=7, device=device)
        first = first_glimpse(posterior, sampler, grid, 1, n_completions=6, generator=torch.Generator().manual_seed(1),
                              device=torch.device("cpu"))
        return greedy_sequence(image, posterior, sampler, grid, 4, n_completions=6, first_location=first,
                               keep_maps=True, generator=torch.Generator().manual_seed(2))

    want = run(None)
    for device in CPU_NAMES:
        got = run(device)
        assert torch.equal(got.cells, want.cells) and torch.equal(got.epe_maps, want.epe_maps)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
def test_a_gpu_the_machine_lacks_is_refused():
    bank, _, _ = make_problem()
    with pytest.raises(ValueError, match="BankSampler.device: 'cuda' requested but CUDA is not available"):
        BankSampler(bank, GRID, device="cuda")
