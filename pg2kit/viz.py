"""Pictures for humans: skeletons, coloured pose maps, mask overlays, labelled grids, PNG files.

Reads and writes RGB uint8 arrays (H, W, 3); keypoints (18, 2) as (x, y), missing = (-1, -1).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pg2kit.atomic import write_bytes
from pg2kit.keypoints import NUM_KEYPOINTS, OPENPOSE_COLORS, SKELETON_LIMBS, present

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel keypoints stay where they are
_PALETTE = np.array(OPENPOSE_COLORS, np.float32)  # (18, 3) RGB


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
    raise ValueError(f"expected an image (H, W[, 1|3|4]), got shape {image.shape}")


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    scale: int = 1,
    thickness: int | None = None,
) -> np.ndarray:
    """Copy of `image` (enlarged `scale` times, nearest) with the OpenPose skeleton drawn on it.

    The 19 SKELETON_LIMBS in the OpenPose palette (limb i in colour i mod 18), then a dot per
    present keypoint in its own colour; limbs with a missing end and missing keypoints are
    skipped. `thickness` (line width in output pixels) defaults to about 1/64 of the image side.
    """
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale}")
    canvas = _rgb(image)
    if scale > 1:
        canvas = cv2.resize(canvas, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    canvas = np.ascontiguousarray(canvas).copy()
    kp = np.asarray(keypoints, np.float64)
    if kp.shape != (NUM_KEYPOINTS, 2):
        raise ValueError(f"keypoints must have shape (18, 2), got {kp.shape}")
    if thickness is None:
        thickness = max(1, round(min(canvas.shape[:2]) / 64))
    ok = present(kp) & np.isfinite(kp).all(1)
    # pixel centre x of the original lies at (x + 0.5) * scale - 0.5 after nearest upscaling
    pts = np.zeros((NUM_KEYPOINTS, 2), np.int64)
    pts[ok] = np.round(((kp[ok] + 0.5) * scale - 0.5) * (1 << _SHIFT)).astype(np.int64)
    limit = 1 << 20  # far-away keypoints: clamp so cv2 gets ints it accepts (lines are clipped)
    pts = np.clip(pts, -limit, limit)
    for i, (a, b) in enumerate(SKELETON_LIMBS):
        if ok[a] and ok[b]:
            colour = OPENPOSE_COLORS[i % len(OPENPOSE_COLORS)]
            cv2.line(canvas, tuple(map(int, pts[a])), tuple(map(int, pts[b])), colour,
                     thickness, cv2.LINE_AA, _SHIFT)  # fmt: skip
    dot = max(1, thickness) + 1
    for j in np.nonzero(ok)[0]:
        cv2.circle(canvas, tuple(map(int, pts[j])), dot << _SHIFT, OPENPOSE_COLORS[j], -1,
                   cv2.LINE_AA, _SHIFT)  # fmt: skip
    return canvas


def colorize_pose_map(pose_map: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 picture of a pose map (H, W, 18): channel j in keypoint j's colour.

    Values are read as intensities in [0, 1] (uint8 maps with values above 1 as 0-255, and maps
    in {-1, +1} as fed to the network are not expected); the maximum over channels is taken per
    colour component, on black.
    """
    pm = np.asarray(pose_map)
    if pm.ndim != 3 or pm.shape[2] != NUM_KEYPOINTS:
        raise ValueError(f"pose map must have shape (H, W, 18), got {pm.shape}")
    if pm.dtype == np.uint8 and pm.max(initial=0) > 1:
        values = pm.astype(np.float32) / 255
    else:
        values = np.clip(pm.astype(np.float32), 0, 1)
    rgb = (values[:, :, :, None] * _PALETTE).max(axis=2)  # (H, W, 18, 3) -> (H, W, 3)
    return np.round(rgb).astype(np.uint8)


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: white where `mask` (H, W) is nonzero, black elsewhere."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {m.shape}")
    return np.repeat(np.where(m != 0, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)


def overlay_mask(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    color: tuple[int, int, int] = (255, 0, 0),
) -> np.ndarray:
    """Copy of `image` with `color` blended in at opacity `alpha` where `mask` is nonzero."""
    img = _rgb(image)
    m = np.asarray(mask) != 0
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match the image {img.shape[:2]}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = img.copy()
    blend = img[m].astype(np.float32) * (1 - alpha) + np.float32(alpha) * np.array(color)
    out[m] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    return out


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    """Resize to `height`, keeping the aspect; nearest when enlarging (keeps small crops crisp)."""
    h, w = image.shape[:2]
    if h == height:
        return image
    new_w = max(1, round(w * height / h))
    interp = cv2.INTER_NEAREST if height > h else cv2.INTER_AREA
    return cv2.resize(image, (new_w, height), interpolation=interp)


def _text_size(text: str, font_scale: float) -> tuple[int, int, int]:
    """Width, height above the baseline, depth below it (pixels) of one line of text."""
    (w, h), baseline = cv2.getTextSize(text, _FONT, font_scale, 1)
    return w, h, baseline


def grid(
    rows: list[list[np.ndarray | None]],
    pad: int = 2,
    bg: int = 255,
    labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    font_scale: float = 0.4,
) -> np.ndarray:
    """Tile images (H, W[, 3]) uint8 of any sizes into one RGB picture.

    Every cell is resized to the tallest cell's height (aspect kept). Column j is as wide as its
    widest cell; cells are left-aligned in it; None leaves a cell empty. `pad` pixels of `bg`
    surround and separate cells. `labels` (one per row) are written in a left margin,
    `col_labels` (one per column) in a top band.
    """
    if not rows or not any(cell is not None for row in rows for cell in row):
        raise ValueError("grid needs at least one image")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    n_cols = max(len(row) for row in rows)
    if col_labels is not None and len(col_labels) > n_cols:
        raise ValueError(f"{len(col_labels)} column labels for {n_cols} columns")
    cells = [[None if c is None else _rgb(c) for c in row] for row in rows]
    cell_h = max(c.shape[0] for row in cells for c in row if c is not None)
    cells = [[None if c is None else _fit_height(c, cell_h) for c in row] for row in cells]
    col_w = [0] * n_cols
    for row in cells:
        for j, c in enumerate(row):
            if c is not None:
                col_w[j] = max(col_w[j], c.shape[1])

    left = top = 0
    if labels:
        left = max(_text_size(t, font_scale)[0] for t in labels) + pad
    if col_labels:
        top = max(sum(_text_size(t, font_scale)[1:]) for t in col_labels) + pad
    height = top + pad + len(rows) * (cell_h + pad)
    width = left + pad + sum(w + pad for w in col_w)
    canvas = np.full((height, width, 3), bg, np.uint8)
    ink = (0, 0, 0) if bg >= 128 else (255, 255, 255)
    xs = np.cumsum([left + pad] + [w + pad for w in col_w])[:n_cols]  # left edge of each column

    for i, row in enumerate(cells):
        y = top + pad + i * (cell_h + pad)
        for j, c in enumerate(row):
            if c is not None:
                canvas[y : y + cell_h, xs[j] : xs[j] + c.shape[1]] = c
        if labels:
            _, th, _ = _text_size(labels[i], font_scale)
            cv2.putText(canvas, labels[i], (pad, y + (cell_h + th) // 2), _FONT, font_scale, ink,
                        1, cv2.LINE_AA)  # fmt: skip
    for j, text in enumerate(col_labels or []):
        _, th, _ = _text_size(text, font_scale)
        cv2.putText(canvas, text, (int(xs[j]), pad + th), _FONT, font_scale, ink, 1,
                    cv2.LINE_AA)  # fmt: skip
    return canvas


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB (or grey) uint8 image as PNG atomically (temporary file, then os.replace)."""
    path = Path(path)
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise ValueError(f"could not encode an image of shape {image.shape} as PNG")
    return write_bytes(path, data.tobytes())
