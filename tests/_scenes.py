"""Photos of several synthetic figures pasted at known boxes (for person-finding tests)."""

from __future__ import annotations

import numpy as np

from pg2kit.datasets.synthetic import render_sample


def photo(height: int, width: int, figures, seed: int = 0) -> tuple[np.ndarray, list]:
    """RGB photo with each (identity, pose, x, figure height) standing on the ground line;
    returns the photo and each figure's true box (x0, y0, x1, y1)."""
    ramp = (110 + 50 * np.linspace(0, 1, height))[:, None, None].astype(np.uint8)
    img = np.broadcast_to(ramp, (height, width, 3)).copy()
    boxes = []
    for identity, pose, x, fh in figures:
        sample, labels = render_sample(identity, pose, size=(fh, fh // 2), seed=seed)
        body = labels > 0
        y = height - fh - 10
        img[y : y + fh, x : x + fh // 2][body] = sample.image[body]
        boxes.append((x, y, x + fh // 2, y + fh))
    return img, boxes


def nearest(box, boxes) -> int:
    """Index of the true box whose centre is nearest `box`'s centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    d = [np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy) for b in boxes]
    return int(np.argmin(d))
