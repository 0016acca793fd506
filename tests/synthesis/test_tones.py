"""SIA tone matching: one monotone curve per channel from the SIA's pooled histogram to the training images'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realnet_core.synthesis.sources import SIASource
from realnet_core.synthesis.tones import apply_tone_curve, channel_histograms, tone_curve


def _images(lo: int, hi: int, seed: int, n: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, (n, 16, 16, 3)).astype(np.uint8)


def test_matched_sia_take_the_training_images_mean_and_spread_per_channel():
    sia, train = _images(90, 170, 0), _images(0, 256, 1)
    train[..., 2] //= 2  # a darker, flatter blue channel
    matched = apply_tone_curve(sia, tone_curve(channel_histograms(sia), channel_histograms(train)))
    for c in range(3):
        assert abs(matched[..., c].mean() - train[..., c].mean()) < 1.0
        assert abs(matched[..., c].std() - train[..., c].std()) < 1.5


def test_the_curve_keeps_each_channels_pixel_order_and_clips_at_the_ends():
    sia, train = _images(60, 200, 2), _images(0, 256, 3)
    lut = tone_curve(channel_histograms(sia), channel_histograms(train))
    assert (np.diff(lut.astype(int), axis=1) >= 0).all()
    assert lut[:, 0].max() == 0 and lut[:, 255].min() == 255  # levels the gain pushes past the ends


def test_equal_histograms_give_the_identity():
    sia = _images(0, 256, 4)
    lut = tone_curve(channel_histograms(sia), channel_histograms(sia))
    assert (lut == np.arange(256)).all()


def test_a_flat_source_channel_is_moved_not_scaled():
    sia = np.full((2, 4, 4, 3), 100, np.uint8)
    train = _images(0, 256, 5)
    lut = tone_curve(channel_histograms(sia), channel_histograms(train))
    assert abs(int(lut[0, 100]) - train[..., 0].mean()) <= 0.5 and lut[0, 101] == lut[0, 100] + 1


def test_bad_histograms_and_images_are_refused():
    good = channel_histograms(_images(0, 256, 5))
    with pytest.raises(ValueError, match="target histogram"):
        tone_curve(good, np.zeros((3, 256), np.int64))
    with pytest.raises(ValueError, match="source histogram"):
        tone_curve(good[:2], good)
    with pytest.raises(ValueError, match="uint8"):
        channel_histograms(np.zeros((2, 4, 4, 3), np.float32))


def test_an_sia_source_with_a_tone_curve_returns_the_mapped_images():
    sia = _images(0, 256, 6, n=4)
    inverted = np.broadcast_to(255 - np.arange(256), (3, 256)).astype(np.uint8).copy()
    gen = torch.Generator().manual_seed(0)
    plain = SIASource(sia).sample(6, gen)
    mapped = SIASource(sia, tones=inverted).sample(6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mapped, 1 - plain, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="tone curve"):
        SIASource(sia, tones=inverted[:, :10])
