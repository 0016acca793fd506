"""``realnet predict``: score new images with a trained model and write heat maps beside them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from realnet_core.data.images import read_rgb, resize_rgb
from realnet_core.viz import overlay, write_png
from stages.common import resolve_device
from stages.evaluate import image_scores
from stages.inputs import to_tensor
from stages.realnet_io import anomaly_maps, load_bundle


def predict(model: str, images: list[str], out: str = "predictions", device: str = "auto",
            pool: int = 16) -> Iterator[tuple[str, float, str]]:
    """Yield (image path, image score, heat-map path) for each image, one at a time."""
    dev = resolve_device(device)
    backbone, net, bundle = load_bundle(model, dev)
    size = int(bundle["image_size"])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in images:
        img = read_rgb(path)
        amap = anomaly_maps(backbone, net, to_tensor(resize_rgb(img, size)[None], dev))
        score = float(image_scores(amap, pool)[0])
        # The map goes back to the image's own size so it lines up with the original.
        full = cv2.resize(amap[0].cpu().numpy(), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        heat = out_dir / f"{Path(path).stem}_heatmap.png"
        write_png(heat, np.concatenate([img, overlay(img, full)], axis=1))
        np.save(out_dir / f"{Path(path).stem}_map.npy", full.astype(np.float16))
        yield path, score, str(heat)


