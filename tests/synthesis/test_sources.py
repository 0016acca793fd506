"""Tests for the anomaly sources."""

import cv2
import numpy as np
import pytest
import torch
import zarr

from realnet_core.synthesis.augment import augment_textures
from realnet_core.synthesis.blend import synthesize
from realnet_core.synthesis.sources import (
    CutPasteSource,
    SIASource,
    TextureSource,
    build_source,
    with_own_images,
    with_shaded_images,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _check(x: torch.Tensor, n: int, size: int) -> None:
    assert x.shape == (n, 3, size, size)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_sia_from_numpy_exact_values():
    imgs = _images(5)
    src = SIASource(imgs)
    x = src.sample(7, _gen(1))
    _check(x, 7, 32)
    # Every sample is one of the stored images, exactly.
    as_u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for s in as_u8:
        assert any(np.array_equal(s, im) for im in imgs)
    assert torch.equal(x, src.sample(7, _gen(1)))


def test_sia_from_zarr_and_resize(tmp_path):
    imgs = _images(10, 32, seed=2)
    arr = zarr.create_array(
        store=str(tmp_path / "sia.zarr"), shape=imgs.shape, chunks=(1, 32, 32, 3), dtype="uint8"
    )
    arr[:] = imgs
    src = build_source("sia", array=zarr.open_array(str(tmp_path / "sia.zarr"), mode="r"))
    x = src.sample(12, _gen(3))  # more samples than images: repeated indices
    y = SIASource(imgs).sample(12, _gen(3))
    assert torch.equal(x, y)
    _check(src.sample(4, _gen(3), size=16), 4, 16)


def _is_stored(x: torch.Tensor, imgs: np.ndarray) -> list[bool]:
    as_u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [any(np.array_equal(s, im) for im in imgs) for s in as_u8]


def test_sia_augment_share_sends_that_share_through_draems_augmentation():
    imgs = _images(8, seed=4)
    assert all(_is_stored(SIASource(imgs, augment=0.0).sample(64, _gen(5)), imgs))
    assert not any(_is_stored(SIASource(imgs, augment=1.0).sample(64, _gen(5)), imgs))
    half = SIASource(imgs, augment=0.5)
    stored = _is_stored(half.sample(200, _gen(5)), imgs)
    assert 0.35 < 1 - np.mean(stored) < 0.65  # about half changed, each image drawn in or out on its own
    assert torch.equal(half.sample(16, _gen(6)), half.sample(16, _gen(6)))  # seeded: the same batch again


def test_sia_augment_share_outside_zero_to_one_is_an_error():
    with pytest.raises(ValueError, match="augment share must lie in"):
        SIASource(_images(2), augment=1.5)


def test_own_image_share_replaces_that_share_of_rows_by_their_own_images_augmented():
    images = torch.from_numpy(_images(200, size=16, seed=7)).permute(0, 3, 1, 2).float().div(255)
    sources = torch.zeros_like(images)
    gen = _gen(3)
    assert with_own_images(images, sources, 0.0, gen) is sources
    assert torch.equal(gen.get_state(), _gen(3).get_state())  # off: no draw, so the rest of a step is as before

    mixed = with_own_images(images, sources, 0.5, _gen(3))
    changed = mixed.flatten(1).ne(0).any(1)
    assert 0.35 < float(changed.float().mean()) < 0.65  # about half, each row drawn in or out on its own
    assert torch.equal(mixed[~changed], sources[~changed])
    assert torch.equal(mixed, with_own_images(images, sources, 0.5, _gen(3)))  # seeded: the same rows again

    # A chosen row is its own image through the augmentation, not another row's.
    one = with_own_images(images[:1], sources[:1], 1.0, _gen(4))
    gen = _gen(4)
    torch.rand(1, generator=gen)
    own = images[:1].mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    expected = torch.from_numpy(augment_textures(own, gen)).permute(0, 3, 1, 2).float().div(255)
    assert torch.equal(one, expected)


def test_own_image_share_needs_matching_shapes_and_a_share_in_zero_to_one():
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="differ in shape"):
        with_own_images(images, torch.rand(2, 3, 4, 4), 0.5, _gen())
    with pytest.raises(ValueError, match="share must lie in"):
        with_own_images(images, images, 1.5, _gen())


def test_shaded_rows_are_their_own_image_darkened_within_the_range_and_off_draws_nothing():
    images = torch.rand(64, 3, 8, 8) * 0.9 + 0.1
    sources = torch.zeros_like(images)
    gen = _gen(5)
    assert with_shaded_images(images, sources, 0.0, gen) is sources
    assert torch.equal(gen.get_state(), _gen(5).get_state())

    mixed = with_shaded_images(images, sources, 0.5, _gen(5))
    chosen = mixed.flatten(1).ne(0).any(1)
    assert 0.3 < float(chosen.float().mean()) < 0.7  # each row drawn in or out on its own
    ratio = (mixed[chosen] / images[chosen]).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor for the whole row
    assert float(ratio.min()) >= 0.1 - 1e-6 and float(ratio.max()) <= 0.5 + 1e-6
    assert float(ratio[:, 0].max() - ratio[:, 0].min()) > 0.1  # factors vary between rows
    assert torch.equal(mixed, with_shaded_images(images, sources, 0.5, _gen(5)))
    with pytest.raises(ValueError, match="shade share must lie in"):
        with_shaded_images(images, sources, -0.1, _gen())
    with pytest.raises(ValueError, match="differ in shape"):
        with_shaded_images(images, sources[:, :, :4], 0.5, _gen())


def test_texture_source(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a" / "b").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a" / "t1.png"), rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "a" / "b" / "t2.jpg"), rng.integers(0, 256, (80, 50, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    src = build_source("texture", folder=tmp_path)
    assert len(src) == 2
    x = src.sample(5, _gen(4), size=24)
    _check(x, 5, 24)
    assert torch.equal(x, src.sample(5, _gen(4), size=24))


def test_texture_source_empty_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        TextureSource(tmp_path)


def test_cutpaste_source_displaced_content():
    imgs = _images(4, 32, seed=5)
    src = CutPasteSource(imgs)
    x = src.sample(6, _gen(6))
    _check(x, 6, 32)
    assert torch.equal(x, src.sample(6, _gen(6)))
    _check(src.sample(3, _gen(6), size=16), 3, 16)
    # A structured image: blending a displaced copy under a mask changes the masked pixels.
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([yy * 8, xx * 8, (yy + xx) * 4], -1).astype(np.uint8)[None].repeat(2, 0)
    src = CutPasteSource(smooth, brightness=0, contrast=0, saturation=0)
    p = src.sample(2, _gen(7))
    base = torch.from_numpy(smooth).permute(0, 3, 1, 2).float() / 255
    assert (p - base).abs().mean() > 0.05
    aug, masks = synthesize(base, p, None, generator=_gen(8), normal_fraction=0.0)
    changed = (aug != base).any(dim=1, keepdim=True)
    assert changed.sum() > 0.9 * masks.sum()


def test_build_source_unknown():
    with pytest.raises(ValueError, match="cutpaste"):
        build_source("nsa_but_misspelt")
