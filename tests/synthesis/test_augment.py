"""DRAEM's texture augmentation: each operation does what its name says, and the draw is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realnet_core.synthesis.augment import OPERATIONS, PER_IMAGE, augment_textures


def _image(seed: int = 0, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    ramp = np.stack([yy * 6, xx * 6, (yy + xx) * 3], -1) + np.random.default_rng(seed).integers(0, 40, (size, size, 3))
    return np.clip(ramp, 0, 255).astype(np.uint8)


def test_operations_do_what_their_names_say():
    img, u = _image(), np.array([0.25, 0.5, 0.75])
    np.testing.assert_array_equal(OPERATIONS["invert"](img, u), 255 - img)
    assert np.all(OPERATIONS["posterize"](img, np.array([0.0, 0, 0])) % 128 == 0)  # 1 bit: 0 or 128
    np.testing.assert_array_equal(OPERATIONS["posterize"](img, np.array([0.99, 0, 0])), img)  # 8 bits
    solar = OPERATIONS["solarize"](img, np.array([0.1, 0.0, 0]))  # applied, threshold 32
    np.testing.assert_array_equal(solar, np.where(img >= 32, 255 - img, img))
    np.testing.assert_array_equal(OPERATIONS["solarize"](img, np.array([0.9, 0.0, 0])), img)  # the other half
    stretched = OPERATIONS["autocontrast"](img, np.array([0.0, 0, 0]))
    assert stretched.min() == 0 and stretched.max() == 255
    darker = OPERATIONS["gamma"](img, np.array([0.99, 0.99, 0.99]))  # gamma near 2 darkens mid-tones
    assert darker.astype(int).sum() < img.astype(int).sum()
    brighter = OPERATIONS["brightness"](img, np.array([0.99, 0.99, 0]))  # x1.2 + 30 on luma
    assert brighter.astype(int).sum() > img.astype(int).sum()
    np.testing.assert_array_equal(OPERATIONS["rotate"](img, np.array([0.5, 0, 0])), img)  # 0 degrees
    assert OPERATIONS["rotate"](img, np.array([0.0, 0, 0]))[0, 0].tolist() == [0, 0, 0]  # -45: black corner
    hist = np.bincount(OPERATIONS["equalize"](img, u)[..., 0].ravel(), minlength=256)
    assert hist.nonzero()[0].max() == 255  # equalised channels reach white
    unsharp = OPERATIONS["sharpness"](img, np.array([0.5, 0, 0]))  # factor 1: the image itself
    assert np.abs(unsharp.astype(int) - img).max() <= 1
    shifted = OPERATIONS["hue_saturation"](img, np.array([0.9, 0.5, 0]))
    assert not np.array_equal(shifted, img)


def test_every_image_gets_three_operations_from_a_seeded_draw():
    images = np.stack([_image(s) for s in range(6)])
    a = augment_textures(images, torch.Generator().manual_seed(1))
    b = augment_textures(images, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == images.shape and a.dtype == np.uint8
    assert all(not np.array_equal(x, y) for x, y in zip(a, images, strict=True))
    assert PER_IMAGE == 3 and len(OPERATIONS) == 10  # DRAEM's protocol


def test_the_randomness_taken_does_not_depend_on_the_images():
    # What the textures look like must not shift the generator that later draws masks and blends.
    gens = [torch.Generator().manual_seed(3) for _ in range(2)]
    augment_textures(np.stack([_image(s) for s in range(4)]), gens[0])
    augment_textures(np.zeros((4, 32, 32, 3), np.uint8), gens[1])
    assert torch.equal(gens[0].get_state(), gens[1].get_state())


def test_rejects_images_that_are_not_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        augment_textures(np.zeros((2, 8, 8, 3), np.float32), torch.Generator())
