"""The colour prior of small CPU models: predicted images keep the training set's range and mean colours."""

from __future__ import annotations

import torch

from stages.diffusion_model import _colour_clip

RANGE = [[-0.8, -0.8, -0.8], [0.8, 0.8, 0.8]]
MEANS = [[-0.1, -0.05, -0.2], [0.1, 0.05, 0.0]]


def test_a_saturated_prediction_is_pulled_back_to_a_training_mean_colour():
    x0 = torch.full((2, 3, 8, 8), 0.7)  # a flat yellow-white image, far from every training mean
    x0[:, :, 2, 3] = -0.1  # with one dark local detail
    out = _colour_clip(RANGE, MEANS, torch.device("cpu"))(x0)
    means = out.mean(dim=(2, 3))
    assert torch.all(means <= torch.tensor(MEANS[1]) + 1e-6) and torch.all(means >= torch.tensor(MEANS[0]) - 1e-6)
    # The local detail survives: the shift moves the whole image, not its contrasts.
    assert torch.allclose(out[:, :, 2, 3] - out[:, :, 0, 0], torch.full((2, 3), -0.8), atol=1e-5)


def test_an_image_with_a_training_mean_is_left_alone():
    x0 = torch.zeros(1, 3, 8, 8)
    x0[:, :, :4] = 0.05
    x0[:, :, 4:] = -0.05
    assert torch.equal(_colour_clip(RANGE, MEANS, torch.device("cpu"))(x0), x0)


def test_without_mean_range_only_the_pixel_range_is_clipped():
    x0 = torch.full((1, 3, 4, 4), 0.7)
    assert torch.equal(_colour_clip(RANGE, None, torch.device("cpu"))(x0), x0)
    assert _colour_clip(None, MEANS, torch.device("cpu")) is None
