"""Local updates give the full forward's logits for every (cell, completion) pair, and the same greedy choices."""

import pytest
import torch

from foveal.boed import NetworkPosterior, cell_masks, expected_posterior_entropy, greedy_sequence
from foveal.boed.epe import SearchConfig
from foveal.boed.local import cell_logits
from foveal.models import create_model
from foveal.retina import LocationGrid, masked_input


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def network(channels, size, widths, strides, classes=4, seed=0):
    torch.manual_seed(seed)
    net = create_model("posterior-cnn", in_channels=channels, num_classes=classes, image_size=size, widths=widths,
                       strides=strides)
    with torch.no_grad():  # BatchNorm with non-trivial statistics, so that folding it is tested
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.3), m.running_var.uniform_(0.5, 2), m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    return net.eval()


@pytest.mark.parametrize("channels,size,widths,strides,grid", [
    (1, (20, 20), (4, 8, 8), (2, 2, 2), LocationGrid.from_stride((20, 20), 6, 2)),
    (3, (17, 23), (4, 6, 8, 8), (1, 2, 1, 2), LocationGrid.from_count((17, 23), 5, (3, 4))),  # odd, uneven cells
    (2, (16, 16), (6,), (1,), LocationGrid.from_stride((16, 16), 16, 1)),  # one cell: the whole image
])
def test_local_updates_equal_the_full_forward(channels, size, widths, strides, grid):
    net = network(channels, size, widths, strides)
    N = 3
    images = torch.rand(N, channels, *size, generator=torch.Generator().manual_seed(1))
    observed = torch.zeros(1, *size)
    observed[:, 2:7, 3:9] = 1
    G = len(grid)
    cells, index = torch.arange(G).repeat_interleave(N), torch.arange(N).repeat(G)
    masks = torch.maximum(cell_masks(grid), observed[None])[cells]
    with torch.no_grad():
        full = net(masked_input(images[index] * masks, masks))
    local = cell_logits(net, images, observed, grid, cells, index, batch_size=5)
    assert local.shape == (G * N, 4) and torch.allclose(local, full, atol=1e-5)
    assert cell_logits(net, images, observed, grid, cells[:0], index[:0]).shape == (0, 4)


def test_local_search_makes_the_plain_choices():
    net = network(1, (24, 24), (8, 16, 16), (2, 2, 1), classes=3)
    post = NetworkPosterior(net)
    grid = LocationGrid.from_stride((24, 24), 6, 3)
    completions = torch.rand(5, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    weights = torch.tensor([0.1, 0.3, 0.2, 0.15, 0.25])
    observed = torch.zeros(1, 24, 24)
    observed[:, 6:12, 9:15] = 1
    plain = expected_posterior_entropy(post, completions, weights, observed, grid)
    local = expected_posterior_entropy(post, completions, weights, observed, grid, local_updates=True, batch_size=33)
    assert torch.allclose(plain, local, atol=1e-5)

    class Bank:
        def sample(self, image, mask, n, *, generator=None):
            return completions, weights

    a = greedy_sequence(completions[0], post, Bank(), grid, 4, n_completions=5, keep_maps=True)
    b = greedy_sequence(completions[0], post, Bank(), grid, 4, n_completions=5, keep_maps=True,
                        search=SearchConfig(local_updates=True, screen_completions=2, screen_top_k=len(grid)))
    assert torch.equal(a.cells, b.cells) and torch.allclose(a.epe_maps, b.epe_maps, atol=1e-5)


def test_local_updates_need_a_posterior_cnn():
    class Other:
        multilabel = False

        def logits(self, images, masks):
            return torch.zeros(images.shape[0], 2)

    grid = LocationGrid.from_stride((8, 8), 4, 4)
    args = (torch.rand(2, 1, 8, 8), torch.tensor([0.5, 0.5]), torch.zeros(1, 8, 8), grid)
    with pytest.raises(ValueError, match="local_updates: expected a posterior with cell_logits.*found Other"):
        expected_posterior_entropy(Other(), *args, local_updates=True)
    with pytest.raises(ValueError, match="expected a PosteriorCNN.*found Sequential"):
        NetworkPosterior(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(128, 2))).cell_logits(
            torch.rand(2, 1, 8, 8), torch.zeros(1, 8, 8), grid, torch.tensor([0]), torch.tensor([0]))
