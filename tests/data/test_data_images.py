"""Decoding of every channel layout and bit depth, failure messages, resizing and batching."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from realnet_core.data.errors import DatasetError
from realnet_core.data.images import load_batch, read_mask, read_rgb, resize_mask, resize_rgb

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_rgb_lossless_formats_keep_channel_order(tmp_path, ext):
    p = tmp_path / f"img{ext}"
    Image.fromarray(RGB, "RGB").save(p)
    out = read_rgb(p)
    assert out.dtype == np.uint8 and out.shape == (9, 11, 3)
    np.testing.assert_array_equal(out, RGB)


def test_jpeg_is_rgb_not_bgr(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 250  # pure red survives JPEG well enough to tell R from B
    p = tmp_path / "red.jpg"
    Image.fromarray(img).save(p, quality=95)
    out = read_rgb(str(p))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_gray_and_gray_alpha(tmp_path):
    gray = RNG.integers(0, 256, (7, 5), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    la = np.stack([gray, np.full_like(gray, 17)], axis=2)
    Image.fromarray(la, "LA").save(tmp_path / "ga.png")
    for name in ("g.png", "ga.png"):
        out = read_rgb(tmp_path / name)
        assert out.shape == (7, 5, 3)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_drops_alpha(tmp_path):
    alpha = np.zeros((9, 11, 1), np.uint8)
    alpha[4, 5] = 255  # one visible pixel is enough: alpha is dropped
    Image.fromarray(np.concatenate([RGB, alpha], axis=2), "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), RGB)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_fully_transparent_image_is_an_error_naming_it(tmp_path, mode):
    # Before, it trained as the colours under its alpha, which exporters fill with anything.
    from realnet_core.data.images import check_file, image_size

    colour = RGB if mode == "RGBA" else RGB[..., :1]
    path = tmp_path / "clear.png"
    Image.fromarray(np.concatenate([colour, np.zeros((9, 11, 1), np.uint8)], axis=2), mode).save(path)
    for read in (read_rgb, image_size, check_file):  # check_file: found before training, without decoding RGB
        with pytest.raises(DatasetError, match=f"fully transparent .*: {re.escape(str(path))}"):
            read(path)


def test_16_bit_is_scaled_to_8_bit(tmp_path, trees):
    vals = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    trees.image(tmp_path / "g16.png", value=vals)
    np.testing.assert_array_equal(read_rgb(tmp_path / "g16.png")[..., 1], np.arange(256).reshape(16, 16))
    bgr16 = np.zeros((4, 4, 3), np.uint16)
    bgr16[..., 2] = 65535  # red in OpenCV's BGR order
    trees.image(tmp_path / "c16.png", value=bgr16)
    out = read_rgb(tmp_path / "c16.png")
    assert out.dtype == np.uint8
    assert (out[..., 0] == 255).all() and (out[..., 2] == 0).all()


def test_non_ascii_path(tmp_path):
    p = tmp_path / "données_测试" / "image é.png"
    p.parent.mkdir()
    Image.fromarray(RGB).save(p)
    np.testing.assert_array_equal(read_rgb(p), RGB)


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "garbage", "truncated_png", "truncated_jpg", "truncated_bmp"]
)
def test_unreadable_files_name_the_path(tmp_path, kind):
    big = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    if kind == "missing":
        p = tmp_path / "nope.png"
    elif kind == "empty":
        p = tmp_path / "empty.png"
        p.write_bytes(b"")
    elif kind == "garbage":
        p = tmp_path / "garbage.png"
        p.write_bytes(b"this is not an image at all" * 10)
    else:
        ext = {"truncated_png": ".png", "truncated_jpg": ".jpg", "truncated_bmp": ".bmp"}[kind]
        full = tmp_path / f"full{ext}"
        Image.fromarray(big).save(full)
        data = full.read_bytes()
        p = tmp_path / f"cut{ext}"
        p.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match=p.name):
        read_rgb(p)
    with pytest.raises(DatasetError, match=p.name):
        read_mask(p)


def test_read_mask_any_layout(tmp_path, trees):
    m = np.zeros((6, 8), np.uint8)
    m[1:3, 2:5] = 255
    trees.image(tmp_path / "m.png", value=m)
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool and out.shape == (6, 8)
    np.testing.assert_array_equal(out, m > 0)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[1:3, 2:5, 1] = 1  # any non-zero channel counts
    trees.image(tmp_path / "rgb.png", value=rgb)
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), m > 0)
    rgba = np.concatenate([rgb, np.full((6, 8, 1), 255, np.uint8)], axis=2)
    trees.image(tmp_path / "rgba.png", value=rgba)  # opaque alpha must not mark everything
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.png"), m > 0)


def test_resize():
    img = RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    for size in (16, 40, 64):
        out = resize_rgb(img, size)
        assert out.shape == (size, size, 3) and out.dtype == np.uint8
    flat = np.full((40, 40, 3), 77, np.uint8)
    assert (resize_rgb(flat, 10) == 77).all()
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    up = resize_mask(mask, 8)
    assert up.dtype == bool and up.shape == (8, 8)
    np.testing.assert_array_equal(up, np.kron(mask, np.ones((2, 2), bool)))
    assert resize_mask(np.kron(mask, np.ones((4, 4), bool)), 4).tolist() == mask.tolist()


def test_load_batch(tmp_path, trees):
    paths = [trees.image(tmp_path / f"{i}.png", shape=(10 + i, 12, 3), seed=i) for i in range(3)]
    batch = load_batch(paths, 8)
    assert batch.shape == (3, 8, 8, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[1], resize_rgb(read_rgb(paths[1]), 8))


def test_check_file_passes_whole_images_and_names_broken_ones(tmp_path):
    from realnet_core.data.images import check_file

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((32, 32, 3), 80, np.uint8))
    cv2.imwrite(str(tmp_path / "good.jpg"), np.full((32, 32, 3), 80, np.uint8))
    check_file(good)
    check_file(tmp_path / "good.jpg")

    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(good.read_bytes()[:40])
    cut_jpg = tmp_path / "cut.jpg"
    cut_jpg.write_bytes((tmp_path / "good.jpg").read_bytes()[:-2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, message in [(cut_png, "PNG IEND chunk missing"), (cut_jpg, "JPEG end-of-image marker missing"),
                          (empty, "image file is empty"), (tmp_path / "gone.png", "cannot read image file")]:
        with pytest.raises(DatasetError, match=message) as info:
            check_file(path)
        assert str(path) in str(info.value)
