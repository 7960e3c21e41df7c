"""Slow, plainly written reference versions of pg2kit.maps (SPEC section 3) for the tests and bench.

Plain Python loops over points and pixels; shares no code with pg2kit.maps. Reads keypoints
(18, 2) as (x, y), missing = any coordinate < 0 (or not finite); returns numpy arrays.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

# Written out again on purpose (not imported) so a typo in pg2kit.keypoints cannot hide here.
SEGMENTS = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (1, 16), (1, 17), (8, 11), (11, 5),
    (8, 2), (16, 17),
]  # fmt: skip


def is_present(point) -> bool:
    x, y = float(point[0]), float(point[1])
    return math.isfinite(x) and math.isfinite(y) and x >= 0 and y >= 0


def nearest_pixel(v: float) -> int:
    """floor(v + 0.5) computed exactly (with fractions, so no floating-point rounding)."""
    return math.floor(Fraction(float(v)) + Fraction(1, 2))


def stamp_disk(image, x: float, y: float, radius: int, channel=None) -> None:
    """Set the pixels of a disk around the nearest pixel of (x, y), inside the image, to 1."""
    height, width = image.shape[0], image.shape[1]
    cx, cy = nearest_pixel(x), nearest_pixel(y)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            row, col = cy + dy, cx + dx
            if 0 <= row < height and 0 <= col < width:
                if channel is None:
                    image[row, col] = 1
                else:
                    image[row, col, channel] = 1


def pose_map_disk(keypoints, height: int, width: int, radius: int = 4) -> np.ndarray:
    out = np.zeros((height, width, 18), np.uint8)
    for j in range(18):
        if is_present(keypoints[j]):
            stamp_disk(out, keypoints[j][0], keypoints[j][1], radius, channel=j)
    return out


def pose_map_gaussian(keypoints, height: int, width: int, sigma: float = 6.0) -> np.ndarray:
    out = np.zeros((height, width, 18), np.float64)
    for j in range(18):
        if not is_present(keypoints[j]):
            continue
        x, y = float(keypoints[j][0]), float(keypoints[j][1])
        for row in range(height):
            for col in range(width):
                d2 = (col - x) ** 2 + (row - y) ** 2
                out[row, col, j] = math.exp(-d2 / (2 * sigma * sigma))
    return out.astype(np.float32)


def segment_points(keypoints, radius: int = 4) -> list[tuple[float, float]]:
    """All disk centres of the PG2 mask: segment ends, then interior points, per segment."""
    points = []
    for a, b in SEGMENTS:
        if not (is_present(keypoints[a]) and is_present(keypoints[b])):
            continue
        ax, ay = float(keypoints[a][0]), float(keypoints[a][1])
        bx, by = float(keypoints[b][0]), float(keypoints[b][1])
        points.append((ax, ay))
        points.append((bx, by))
        length = math.sqrt((bx - ax) * (bx - ax) + (by - ay) * (by - ay))
        n = int(length / radius)
        if n > 1:
            for k in range(1, n):
                t = k / n
                points.append((ax + t * (bx - ax), ay + t * (by - ay)))
    return points


def closing_5x5(mask: np.ndarray) -> np.ndarray:
    """Dilation then erosion by a 5x5 square, looking only at pixels inside the image."""
    height, width = mask.shape
    dilated = np.zeros_like(mask)
    for row in range(height):
        for col in range(width):
            if mask[row, col]:
                for r in range(max(0, row - 2), min(height, row + 3)):
                    for c in range(max(0, col - 2), min(width, col + 3)):
                        dilated[r, c] = 1
    closed = np.zeros_like(mask)
    for row in range(height):
        for col in range(width):
            if not dilated[row, col]:
                continue
            keep = 1
            for r in range(max(0, row - 2), min(height, row + 3)):
                for c in range(max(0, col - 2), min(width, col + 3)):
                    if not dilated[r, c]:
                        keep = 0
            closed[row, col] = keep
    return closed


def body_mask(keypoints, height: int, width: int, radius: int = 4) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for x, y in segment_points(keypoints, radius):
        stamp_disk(mask, x, y, radius)
    return closing_5x5(mask)


def eval_mask(keypoints, height: int, width: int, half_width: float = 4.0, radius: float = 4.0):
    mask = np.zeros((height, width), np.uint8)
    for a, b in SEGMENTS:
        if not (is_present(keypoints[a]) and is_present(keypoints[b])):
            continue
        ax, ay = float(keypoints[a][0]), float(keypoints[a][1])
        bx, by = float(keypoints[b][0]), float(keypoints[b][1])
        dx, dy = bx - ax, by - ay
        l2 = dx * dx + dy * dy
        if l2 == 0:
            continue
        # only pixels near the segment can be inside it
        c0 = max(0, int(math.floor(min(ax, bx) - half_width)) - 1)
        c1 = min(width, int(math.ceil(max(ax, bx) + half_width)) + 2)
        r0 = max(0, int(math.floor(min(ay, by) - half_width)) - 1)
        r1 = min(height, int(math.ceil(max(ay, by) + half_width)) + 2)
        for row in range(r0, r1):
            for col in range(c0, c1):
                px, py = col - ax, row - ay
                along = px * dx + py * dy  # |p - a| |b - a| cos
                across = px * dy - py * dx  # |p - a| |b - a| sin
                if 0 <= along <= l2 and across * across <= half_width * half_width * l2:
                    mask[row, col] = 1
    for j in range(18):
        if not is_present(keypoints[j]):
            continue
        x, y = float(keypoints[j][0]), float(keypoints[j][1])
        for row in range(max(0, int(y - radius) - 1), min(height, int(y + radius) + 2)):
            for col in range(max(0, int(x - radius) - 1), min(width, int(x + radius) + 2)):
                if (col - x) * (col - x) + (row - y) * (row - y) <= radius * radius:
                    mask[row, col] = 1
    return closing_5x5(mask)
