"""Image and mask decoding, resizing and batching for the dataset readers.

One rule for every image and mask, wherever it is read (training, evaluation, predict, data check):

1. Decoded as it is displayed: the EXIF orientation (JPEG, TIFF, PNG, WebP) is applied.
2. Colours: gray is repeated into three channels, alpha is dropped (a fully transparent image is an
   error), 16-bit is scaled to 8 bits over the full range (65535 -> 255), float is clipped to [0, 1].
3. Any size and aspect ratio: stretched to the model's square (``data.image_size``) without keeping
   the aspect ratio, as the paper does (``data check`` warns about non-square images).
4. A mask follows its image: read by the same rule (its own orientation applied), it must have its image's
   displayed height and width, and is resized to the same square with nearest-neighbour sampling.

Decoding goes through ``cv2.imdecode`` on bytes read with ``open()`` rather than ``cv2.imread``,
because ``imread`` silently fails on non-ASCII paths on some platforms.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from .errors import DatasetError

PathLike = str | os.PathLike


TAIL = 4096  # bytes at the end of a file that the truncation checks look at


def _truncation(head: bytes, tail: bytes, size: int) -> str | None:
    """Cheap end-of-file checks for formats whose decoders accept a cut-off file.

    libjpeg (and some BMP readers) return a partly grey image with only a warning when the file is
    cut short, which would silently poison training data. ``head``: the first bytes, ``tail``: the
    last ``TAIL`` bytes, ``size``: the file's length.
    """
    if head[:2] == b"\xff\xd8":
        # 0xFFD9 cannot occur inside entropy-coded data (0xFF is byte-stuffed there), so its presence
        # near the end means the end-of-image marker was written; trailing padding is tolerated.
        if b"\xff\xd9" not in tail:
            return "JPEG end-of-image marker missing"
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in tail:
            return "PNG IEND chunk missing"
    elif head[:2] == b"BM" and size >= 14:
        declared = int.from_bytes(head[2:6], "little")
        if declared and size < declared:
            return f"BMP header declares {declared} bytes, file has {size}"
    return None


def _require_whole(path: PathLike, head: bytes, tail: bytes, size: int) -> None:
    """DatasetError naming ``path`` if the file is empty or cut short (see ``_truncation``)."""
    if size == 0:
        raise DatasetError(f"image file is empty: {os.fspath(path)}")
    problem = _truncation(head, tail, size)
    if problem:
        raise DatasetError(f"image file is truncated ({problem}): {os.fspath(path)}")


SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"II*\x00", b"MM\x00*")  # PNG, JPEG, BMP, TIFF


def check_file(path: PathLike, known_format: bool = False) -> None:
    """Without decoding: DatasetError if the image file is missing, empty or cut short, or, with
    ``known_format``, does not start like a PNG, JPEG, BMP or TIFF file.

    Two small reads per file, so a whole test split is checked in well under a second before
    training starts, instead of failing at evaluation hours later.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(32)
            f.seek(max(0, size - TAIL))
            tail = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read image file {os.fspath(path)}: {e}") from e
    _require_whole(path, head, tail, size)
    if known_format and not head.startswith(SIGNATURES):
        raise DatasetError(f"not a PNG, JPEG, BMP or TIFF file: {os.fspath(path)}")
    # PNG colour types 4 and 6 carry alpha (IHDR byte 25): only those are decoded, to find a fully
    # transparent image before training; other files cost no decoding.
    if head.startswith(SIGNATURES[0]) and len(head) > 25 and head[25] in (4, 6):
        _require_visible(_decode(path), path)


def _decode(path: PathLike) -> np.ndarray:
    """Decode a file with every channel and its native bit depth kept."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"cannot read image file {os.fspath(path)}: {e}") from e
    _require_whole(path, data[:16], data[-TAIL:], len(data))
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DatasetError(f"cannot decode image file (corrupt, truncated or unsupported): {os.fspath(path)}")
    return _orient(img, exif_orientation(data))


EXIF_ORIENTATION = 0x0112


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (1-8) of an encoded image, 1 where it has none. Pillow reads only the header."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            value = im.getexif().get(EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as displayed: EXIF orientation 2-8 as Pillow's ``ImageOps.exif_transpose`` applies it."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise to display
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transversed
        8: lambda a: np.rot90(a, 1),  # rotated 90 anticlockwise to display
    }
    return np.ascontiguousarray(ops[orientation](img)) if orientation in ops else img


def _to_uint8(img: np.ndarray, path: PathLike) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # Full-range scaling: 16-bit industrial captures use the whole range, 65535 -> 255.
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise DatasetError(f"unsupported pixel type {img.dtype} in image file {os.fspath(path)}")


def _require_visible(img: np.ndarray, path: PathLike) -> None:
    """Alpha is dropped, except that an image transparent everywhere is an error: its colour channels
    are whatever the exporter left there, not the picture."""
    if img.ndim == 3 and img.shape[2] in (2, 4) and not img[:, :, -1].any():
        raise DatasetError(f"image is fully transparent (alpha 0 everywhere), so its colours are not the "
                           f"picture: {os.fspath(path)}")


def read_rgb(path: PathLike) -> np.ndarray:
    """Read any image (gray, gray+alpha, BGR, BGRA, 8 or 16 bit) as ``(H, W, 3)`` uint8 RGB.

    Alpha is dropped; a fully transparent image is a DatasetError (``_require_visible``)."""
    img = _to_uint8(_decode(path), path)
    _require_visible(img, path)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3:
        raise DatasetError(f"unexpected image shape {img.shape} in {os.fspath(path)}")
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(np.repeat(img[:, :, :1], 3, axis=2))
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise DatasetError(f"unexpected number of channels ({channels}) in {os.fspath(path)}")


def read_mask(path: PathLike) -> np.ndarray:
    """Read a ground-truth mask as ``(H, W)`` bool: True wherever any colour channel is > 0."""
    img = _decode(path)
    if img.ndim == 3:
        if img.shape[2] in (2, 4):
            img = img[:, :, :-1]  # alpha is not part of the annotation
        img = img.max(axis=2)
    elif img.ndim != 2:
        raise DatasetError(f"unexpected mask shape {img.shape} in {os.fspath(path)}")
    return img > 0


def image_size(path: PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image file, failing with ``DatasetError`` if it does not decode or is
    fully transparent."""
    img = _decode(path)
    _require_visible(img, path)
    return int(img.shape[0]), int(img.shape[1])


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 image to ``(size, size, 3)``.

    INTER_AREA when shrinking avoids the aliasing that bilinear gives on fine textures.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(img, dtype=np.uint8)
    interp = cv2.INTER_AREA if size < h or size < w else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(img, dtype=np.uint8), (size, size), interpolation=interp)
    return out


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W)`` mask to ``(size, size)`` bool with nearest-neighbour sampling.

    INTER_NEAREST_EXACT samples pixel centres, as INTER_AREA and INTER_LINEAR do for the images;
    plain INTER_NEAREST shifts the mask by up to half a source pixel against its image.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    if mask.shape == (size, size):
        return mask.astype(bool, copy=True)
    out = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    return out > 0


def load_batch(paths: Sequence[PathLike], size: int) -> np.ndarray:
    """Read and resize images into one ``(N, size, size, 3)`` uint8 array."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = resize_rgb(read_rgb(p), size)
    return out
