import pytest
import torch

from foveal.retina import (
    LocationGrid, crop, extract_glimpses, extract_glimpses_loop, masked_input, observation_mask, top_left,
)


@pytest.mark.parametrize("shape,size,scales", [((5, 1, 28, 28), 8, 1), ((4, 3, 60, 60), 12, 3), ((3, 2, 17, 23), 5, 2)])
def test_batched_equals_per_sample_reference(shape, size, scales):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(shape, generator=g)
    locations = torch.rand(shape[0], 2, generator=g) * 2.6 - 1.3  # some outside [-1, 1]: clamped
    locations[0] = torch.tensor([-1.0, 1.0])  # corner: mostly zero padding
    fast = extract_glimpses(images, locations, size, scales)
    assert fast.shape == (shape[0], scales, shape[1], size, size)
    assert torch.equal(fast, extract_glimpses_loop(images, locations, size, scales))


@pytest.mark.parametrize("size,scales,factor", [(12, 3, 2), (5, 3, 3), (5, 3, 2), (4, 2, 3)])
def test_scales_cut_from_one_square_equal_their_own_cuts(size, scales, factor):
    """The finer scales are sliced out of the largest square; on and off the half-pixel lattice (where
    floor(centre - side / 2 + 0.5) flips) they equal squares cut one by one."""
    g = torch.Generator().manual_seed(1)
    images = torch.rand(1, 2, 31, 37, generator=g).expand(400, -1, -1, -1)
    half = (torch.randint(0, 70, (200, 2), generator=g) + 0.5) / torch.tensor([31.0, 37.0]) * 2 - 1  # centre m + 1/2
    locations = torch.cat([half, torch.rand(200, 2, generator=g) * 2.4 - 1.2])
    assert torch.equal(extract_glimpses(images, locations, size, scales, factor),
                       extract_glimpses_loop(images, locations, size, scales, factor))


def test_crop_exact_pixels_and_zero_padding():
    image = torch.arange(36.0).view(1, 1, 6, 6)
    patch = crop(image, torch.tensor([[-1, 4]]), 3)[0, 0]
    expected = torch.tensor([[0.0, 0.0, 0.0], [4.0, 5.0, 0.0], [10.0, 11.0, 0.0]])  # rows -1..1, cols 4..6
    assert torch.equal(patch, expected)
    assert torch.equal(crop(image, torch.tensor([[50, -50]]), 3), torch.zeros(1, 1, 3, 3))


def test_centre_location_and_coarse_scale_is_average():
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3:5, 3:5] = 1.0  # a 2x2 block at the centre
    g = extract_glimpses(image, torch.zeros(1, 2), 2, num_scales=2)
    assert torch.equal(g[0, 0, 0], torch.ones(2, 2))  # finest scale: the block itself
    assert torch.allclose(g[0, 1, 0], torch.full((2, 2), 0.25))  # 4x4 pooled by 2: each cell a quarter of the block


def test_top_left_convention():
    # centre of a 28 px image is pixel 14; an 8 px glimpse there starts at 10
    assert top_left(torch.zeros(2), (28, 28), 8).tolist() == [10, 10]
    assert top_left(torch.tensor([-1.0, 1.0]), (28, 28), 8).tolist() == [-4, 24]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="locations"):
        extract_glimpses(torch.rand(2, 1, 8, 8), torch.rand(3, 2), 4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        extract_glimpses(torch.rand(1, 8, 8), torch.rand(1, 2), 4)


def test_grid_counts_strides_and_round_trip():
    celeba = LocationGrid.from_count((224, 224), 16, 50)
    assert celeba.shape == (50, 50) and celeba.rows[0] == 0 and celeba.rows[-1] == 208
    cub = LocationGrid.from_stride((128, 128), 32, 8)
    assert cub.shape == (13, 13) and cub.rows[1] - cub.rows[0] == 8
    for grid in (celeba, cub, LocationGrid.from_count((60, 40), 12, (3, 5))):
        locs = grid.locations()
        assert torch.equal(top_left(locs, grid.image_size, grid.glimpse_size), grid.corners())
        idx = torch.arange(len(grid))
        assert torch.equal(grid.nearest_index(locs), idx)
        assert torch.equal(grid.corner_to_index(grid.corners()), idx)
    with pytest.raises(ValueError, match="off the grid"):
        cub.corner_to_index(torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match="LocationGrid.rows"):
        LocationGrid((10, 10), 4, (0, 7), (0,))


def test_observation_mask_union_and_masked_input():
    locs = torch.tensor([[[-1.0, -1.0], [0.0, 0.0]]])  # corner glimpse (partly outside) + centre
    mask = observation_mask(locs, (8, 8), 4)
    expected = torch.zeros(8, 8)
    expected[0:2, 0:2] = 1  # corner glimpse: top-left (-2, -2), clipped
    expected[2:6, 2:6] = 1
    assert torch.equal(mask[0, 0], expected)
    assert torch.equal(observation_mask(locs[:, :0], (8, 8), 4), torch.zeros(1, 1, 8, 8))
    images = torch.rand(1, 3, 8, 8)
    x = masked_input(images, mask)
    assert x.shape == (1, 4, 8, 8)
    assert torch.equal(x[:, :3], images * mask) and torch.equal(x[:, 3:], mask)
