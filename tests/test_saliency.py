"""foveal.saliency: one Sobel, exact on tiny images; the grey image's magnitude and the per-channel sum differ."""

import pytest
import torch

from foveal.saliency import local_variance, saliency_map, sobel_magnitude


def step(rows=4, cols=4, at=2, low=0.0, high=1.0):
    """A vertical step: columns < ``at`` are ``low``, the others ``high``; ``[rows, cols]``."""
    image = torch.full((rows, cols), low)
    image[:, at:] = high
    return image


def test_sobel_of_a_step_is_exact_and_the_frame_is_no_edge():
    # Sobel x of a 0 -> 1 step: 1 + 2 + 1 = 4 on both columns beside it, 0 elsewhere (border repeated)
    mag = sobel_magnitude(step()[None, None])
    assert mag.shape == (1, 1, 4, 4) and mag[0, 0].tolist() == [[0.0, 4.0, 4.0, 0.0]] * 4
    assert sobel_magnitude(torch.full((2, 3, 5, 5), 0.5)).abs().max() == 0
    # a horizontal step gives the same numbers, transposed
    assert sobel_magnitude(step().T[None, None])[0, 0].tolist() == [[0.0] * 4, [4.0] * 4, [4.0] * 4, [0.0] * 4]
    # a diagonal corner: both derivatives, magnitude sqrt(gx^2 + gy^2)
    corner = torch.zeros(3, 3)
    corner[1:, 1:] = 1
    gx = gy = torch.tensor([[1.0, 1.0, 0.0], [3.0, 3.0, 0.0], [4.0, 4.0, 0.0]])  # by hand, border repeated
    assert torch.allclose(sobel_magnitude(corner[None, None])[0, 0], (gx.square() + gy.T.square()).sqrt())


def test_grey_and_per_channel_magnitudes_differ_on_an_edge_of_equal_brightness():
    # red rises where green falls: the channel mean is flat (no edge in the grey image), each channel has one
    image = torch.stack([step(), step(low=1.0, high=0.0)])[None]  # [1, 2, 4, 4]
    assert sobel_magnitude(image).abs().max() == 0  # per_channel=False: the Saccader's grey image
    each = sobel_magnitude(image, per_channel=True)
    assert each.shape == (1, 2, 4, 4) and each[0, 0].tolist() == each[0, 1].tolist() == [[0.0, 4.0, 4.0, 0.0]] * 4
    assert saliency_map(image, "edge")[0].tolist() == [[0.0, 8.0, 8.0, 0.0]] * 4  # the salient maker: their sum
    assert sobel_magnitude(image.double()).dtype == torch.float64  # computed in the images' dtype
    assert saliency_map(image.double()).dtype == torch.float32


def test_local_variance_is_the_windows_variance():
    image = step()[None, None]  # a window over the step holds 3 zeros and 6 ones (border repeated): var 2/9
    var = local_variance(image)
    assert torch.allclose(var[0, 0], torch.tensor([[0.0, 2 / 9, 2 / 9, 0.0]] * 4), atol=1e-6)
    assert torch.equal(saliency_map(torch.cat([image, image], 1), "variance"), 2 * var[:, 0])


def test_saliency_sits_on_edges_and_refuses_unknown_kinds():
    block = torch.zeros(1, 1, 8, 8)
    block[..., 5:7, 5:7] = 1.0
    for kind in ("edge", "variance"):
        assert saliency_map(torch.full((2, 3, 8, 8), 0.7), kind).abs().max() < 1e-6
        s = saliency_map(block, kind)[0]
        assert s[:4].sum() == 0 and s[:, :4].sum() == 0 and s[4:, 4:].sum() > 0
    with pytest.raises(ValueError, match=r"saliency kind: expected one of \('edge', 'variance'\), found 'sobel'"):
        saliency_map(block, "sobel")
    with pytest.raises(ValueError, match=r"images: expected \[B, C, H, W\], found \[8, 8\]"):
        sobel_magnitude(torch.zeros(8, 8))
