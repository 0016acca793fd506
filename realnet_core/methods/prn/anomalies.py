"""PRN's anomaly generation (sec. 3.4 and appendix A.1): Extended Anomalies from seen real ones and Simulated
Anomalies from Perlin noise, both inside a random target area (TA) of the foreground.

* Aug_1 (colour): two distinct operations out of seven {equalize, solarize, posterize, sharpness,
  autocontrast, invert, gamma contrast}, the shared DRAEM-range operations of ``synthesis.augment``.
* TA: a random circle, rectangle or polygon centred on a random foreground pixel, intersected with the
  foreground (the whole image for textures), so it is never empty.
* Extended (Eq. 4): a seen anomaly after Aug_1 and Aug_2 (one of rotate, shear or translate), cut by the
  TA: E = (1 - M) N + (1 - beta) C + beta M N with C = M R. The paper redraws Aug_2 until the anomaly meets
  the TA; here Aug_2 always moves a random pixel of the anomaly onto a random TA pixel (rotations and shears
  turn about it), so the first draw meets it.
* Simulated (Eq. 6): S = (1 - M) N + (1 - beta) M A + beta M N with M = Perlin mask x TA and A a texture
  after Aug_1 (heterogeneous, HEA) or a normal image after Aug_1 cut into an 8 x 8 grid and shuffled
  (homogeneous, HOA).
* beta: the paper does not give its range; DRAEM's U(0, 0.8) [68] is used, for both kinds.

The mask is exact: a pixel outside M is the normal image's, bit for bit. All randomness comes from a
torch.Generator, in amounts that do not depend on the images, so a seeded generator repeats a batch.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from realnet_core.synthesis.augment import OPERATIONS
from realnet_core.synthesis.perlin import draw_perlin, evaluate_perlin

COLOUR_OPS = ("equalize", "solarize", "posterize", "sharpness", "autocontrast", "invert", "gamma")
BETA_RANGE = (0.0, 0.8)  # DRAEM's opacity range; PRN does not state one
GRID = 8  # HOA: the normal image is cut into GRID x GRID tiles and shuffled
PERLIN_TRIES = 4  # Perlin masks drawn per simulated anomaly; the first that meets the TA is used
_POLY_MAX = 8  # polygons have 3 .. _POLY_MAX vertices


def _uniform(n: int, gen: torch.Generator) -> np.ndarray:
    return torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64).cpu().numpy()


def colour_variant(image: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """Aug_1: (H, W, 3) uint8 through two distinct colour operations of seven, in random order."""
    pick = torch.randperm(len(COLOUR_OPS), generator=gen, device=gen.device)[:2].tolist()
    u = _uniform(6, gen).reshape(2, 3)
    for k, op in enumerate(pick):
        image = OPERATIONS[COLOUR_OPS[op]](image, u[k])
    return image


def target_area(foreground: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """A circle, rectangle or polygon (one third each) centred on a random foreground pixel, within the
    foreground: (H, W) bool, never empty (the centre is in it). An empty foreground counts as the whole image."""
    h, w = foreground.shape
    fg = foreground if foreground.any() else np.ones_like(foreground, dtype=bool)
    u = _uniform(4 + 2 * _POLY_MAX, gen)
    ys, xs = np.nonzero(fg)
    k = min(int(u[0] * len(ys)), len(ys) - 1)
    cy, cx = int(ys[k]), int(xs[k])
    side = min(h, w)
    shape = np.zeros((h, w), np.uint8)
    kind = min(int(u[1] * 3), 2)
    if kind == 0:
        cv2.circle(shape, (cx, cy), max(1, round((0.1 + 0.3 * u[2]) * side)), 1, -1)
    elif kind == 1:
        ry, rx = (max(1, round((0.05 + 0.25 * v) * side)) for v in u[2:4])
        cv2.rectangle(shape, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, -1)
    else:
        n = 3 + min(int(u[2] * (_POLY_MAX - 2)), _POLY_MAX - 3)
        # Evenly spread angles with jitter keep every gap at most 180 degrees: the polygon holds its centre.
        angles = 2 * math.pi * (np.arange(n) + 0.5 * u[4:4 + n]) / n
        radii = (0.1 + 0.3 * u[4 + _POLY_MAX:4 + _POLY_MAX + n]) * side
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round().astype(np.int32)
        cv2.fillPoly(shape, [pts], 1)
    shape[cy, cx] = 1
    return shape.astype(bool) & fg


def _random_pixel(mask: np.ndarray, u: float) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    k = min(int(u * len(ys)), len(ys) - 1)
    return int(ys[k]), int(xs[k])


def spatial_variant(image: np.ndarray, mask: np.ndarray, target: tuple[int, int],
                    gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Aug_2: a random pixel of ``mask`` moved onto ``target`` (translate), and a rotation by U(-90, 90)
    degrees or a shear by U(-0.5, 0.5) about it, or neither (one third each). The mask is warped with nearest
    neighbours, so ``target`` is in the returned mask."""
    u = _uniform(3, gen)
    qy, qx = _random_pixel(mask, u[0])
    ty, tx = target
    kind = min(int(u[1] * 3), 2)
    if kind == 0:  # rotate
        a = math.radians(-90 + 180 * u[2])
        lin = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    elif kind == 1:  # shear along x
        lin = np.array([[1.0, -0.5 + u[2]], [0.0, 1.0]])
    else:  # translate only
        lin = np.eye(2)
    # dst = lin (src - q) + t, as OpenCV's forward 2x3 matrix in (x, y) order.
    src, dst = np.array([qx, qy], float), np.array([tx, ty], float)
    matrix = np.concatenate([lin, (dst - lin @ src)[:, None]], 1)
    h, w = mask.shape
    warped = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    warped_mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
    warped_mask[ty, tx] = True  # the pixel moved onto the target (kept exactly against rounding)
    return warped, warped_mask


def blend_inside(normal: np.ndarray, anomaly: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """Eq. 4 / 6 on float images: (1 - M) N + M ((1 - beta) A + beta N); outside M exactly N."""
    out = normal.copy()
    out[mask] = (1 - beta) * anomaly[mask] + beta * normal[mask]
    return out


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def extended_anomaly(normal: np.ndarray, foreground: np.ndarray, seen: np.ndarray, seen_mask: np.ndarray,
                     gen: torch.Generator,
                     beta_range: tuple[float, float] = BETA_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 4: a seen anomaly (uint8 image and bool mask) placed in a target area of a normal uint8 image.

    Returns the float32 (H, W, 3) image in [0, 1] and its (H, W) bool mask M. A seen mask with no pixel
    (which the data rules refuse for a test anomaly) gives the normal image and an empty mask.
    """
    ta = target_area(foreground, gen)
    colour = colour_variant(seen, gen)
    u = _uniform(2, gen)
    if not seen_mask.any():
        return _to_float(normal), np.zeros(seen_mask.shape, bool)
    region, region_mask = spatial_variant(colour, seen_mask, _random_pixel(ta, u[0]), gen)
    mask = region_mask & ta
    beta = beta_range[0] + (beta_range[1] - beta_range[0]) * u[1]
    return blend_inside(_to_float(normal), _to_float(region), mask, beta), mask


def shuffled_normal(image: np.ndarray, gen: torch.Generator, grid: int = GRID) -> np.ndarray:
    """HOA's source: a normal uint8 image after Aug_1, cut into ``grid`` x ``grid`` tiles, shuffled."""
    h, w = image.shape[:2]
    if h % grid or w % grid:
        raise ValueError(f"image size {h}x{w} is not a multiple of the {grid} x {grid} grid")
    image = colour_variant(image, gen)
    order = torch.randperm(grid * grid, generator=gen, device=gen.device).numpy()
    th, tw = h // grid, w // grid
    tiles = image.reshape(grid, th, grid, tw, 3).transpose(0, 2, 1, 3, 4).reshape(grid * grid, th, tw, 3)
    return tiles[order].reshape(grid, grid, th, tw, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)


def simulated_anomaly(normal: np.ndarray, foreground: np.ndarray, source: np.ndarray, gen: torch.Generator,
                      beta_range: tuple[float, float] = BETA_RANGE, min_scale_exp: int = 0,
                      max_scale_exp: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 6: Perlin noise inside a target area of a normal uint8 image, filled from ``source`` (uint8, a
    texture after Aug_1 or a shuffled normal image). Returns the float32 image in [0, 1] and its bool mask.

    The first of PERLIN_TRIES Perlin masks (threshold 0.5) that meets the TA is used; if none does, the TA
    itself is the mask, so every simulated sample carries an anomaly."""
    h, w = foreground.shape
    ta = target_area(foreground, gen)
    noise = evaluate_perlin(draw_perlin(PERLIN_TRIES, h, w, generator=gen, min_scale_exp=min_scale_exp,
                                        max_scale_exp=max_scale_exp), h, w, "cpu")
    candidates = (noise[:, 0] > 0.5).numpy() & ta[None]
    hits = [m for m in candidates if m.any()]
    mask = hits[0] if hits else ta
    beta = beta_range[0] + (beta_range[1] - beta_range[0]) * _uniform(1, gen)[0]
    return blend_inside(_to_float(normal), _to_float(source), mask, beta), mask
