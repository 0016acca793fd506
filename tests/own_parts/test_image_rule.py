"""The one image rule: EXIF orientation applied as displayed, masks follow their images, any format."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from realnet_core.data.check import read_checked_mask
from realnet_core.data.errors import DatasetError
from realnet_core.data.images import image_size, read_mask, read_rgb
from realnet_core.data.readers import TestSample


def _save(path, array, orientation=None, **kw):
    im = Image.fromarray(array)
    if orientation is None:
        im.save(path, **kw)
        return path
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, **kw)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_read_as_pillow_displays_it(orientation, tmp_path):
    pixels = np.random.default_rng(orientation).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    path = _save(tmp_path / "o.png", pixels, orientation)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(read_rgb(path), shown)
    assert image_size(path) == shown.shape[:2]


def test_a_jpeg_rotated_by_its_exif_tag_is_read_upright(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:10, :, 0] = 255  # a red band along the top edge as stored
    path = _save(tmp_path / "phone.jpg", pixels, 6, quality=95)  # 6: turn 90 degrees clockwise to display
    img = read_rgb(path)
    assert img.shape == (60, 40, 3)
    assert img[:, -10:, 0].mean() > 200 and img[:, :10, 0].mean() < 50  # the band is now on the right


def test_a_mask_follows_its_rotated_image_and_a_stored_size_mask_is_refused(tmp_path):
    img = _save(tmp_path / "a.jpg", np.full((20, 30, 3), 128, np.uint8), 8)  # displayed 30 high, 20 wide
    upright = np.zeros((30, 20), np.uint8)
    upright[5:9, 2:6] = 255
    good = TestSample(str(img), 1, "x", str(_save(tmp_path / "a_mask.png", upright)))
    assert read_checked_mask(good).shape == (30, 20) and read_checked_mask(good).sum() == 16
    stored = TestSample(str(img), 1, "x", str(_save(tmp_path / "b_mask.png", np.zeros((20, 30), np.uint8))))
    with pytest.raises(DatasetError, match=r"b_mask.png is 30x20 \(WxH\) but its image .*a.jpg is 20x30"):
        read_checked_mask(stored)


def test_gray_rgba_and_16_bit_images_become_the_same_rgb(tmp_path):
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    expected = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.dstack([expected, np.full((5, 5), 255, np.uint8)])
    sixteen = gray.astype(np.uint16) * 257
    for name, array in (("g.png", gray), ("rgba.png", rgba), ("g16.png", sixteen)):
        assert np.array_equal(read_rgb(_save(tmp_path / name, array)), expected), name
    assert read_mask(_save(tmp_path / "m16.png", sixteen)).sum() == 24  # every non-zero pixel marks the defect
