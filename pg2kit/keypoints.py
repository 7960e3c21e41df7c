"""OpenPose COCO-18 keypoint layout: names, limbs, colours, flips and the BlazePose mapping.

Convention everywhere in pg2kit: keypoints are float32 arrays of shape (18, 2) holding (x, y) =
(column, row) in pixels of the stored image; a missing keypoint is (-1, -1) with score 0.
"""

from __future__ import annotations

import numpy as np

NUM_KEYPOINTS = 18
MISSING = -1.0
# coordinates beyond this (pixels) are absurd for any image pg2kit stores: imported as missing
MAX_COORD = 1e6

KEYPOINT_NAMES = (
    "nose",
    "neck",
    "r_shoulder",
    "r_elbow",
    "r_wrist",
    "l_shoulder",
    "l_elbow",
    "l_wrist",
    "r_hip",
    "r_knee",
    "r_ankle",
    "l_hip",
    "l_knee",
    "l_ankle",
    "r_eye",
    "l_eye",
    "r_ear",
    "l_ear",
)

# Torso keypoints the Def-GAN pair protocol requires: shoulders and hips.
TORSO = (2, 5, 8, 11)

# Index permutation that swaps the person's left and right (for horizontal flips).
FLIP_PERM = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

# The 19 limbs OpenPose draws, with its standard 18-colour palette (RGB), for pictures only.
SKELETON_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)  # fmt: skip
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

# The 23 segments of the PG2 body mask (SPEC section 3).
MASK_SEGMENTS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (1, 16), (1, 17), (8, 11), (11, 5),
    (8, 2), (16, 17),
)  # fmt: skip

# BlazePose (33 landmarks) index for each COCO-18 keypoint; the neck (1) is the shoulder midpoint.
BLAZEPOSE_TO_COCO18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)


def empty_keypoints() -> tuple[np.ndarray, np.ndarray]:
    """All-missing keypoints (18, 2) and scores (18,)."""
    return np.full((NUM_KEYPOINTS, 2), MISSING, np.float32), np.zeros(NUM_KEYPOINTS, np.float32)


def present(keypoints: np.ndarray) -> np.ndarray:
    """Boolean mask (..., 18) of keypoints that are present (both coordinates >= 0)."""
    kp = np.asarray(keypoints)
    return (kp[..., 0] >= 0) & (kp[..., 1] >= 0)


def sanitize_keypoints(keypoints: np.ndarray) -> tuple[np.ndarray, int]:
    """(..., 18, 2) keypoints with non-finite or absurd (|v| > MAX_COORD) points made missing,
    and the number of points so dropped. Use on every imported coordinate (CSV, JSON)."""
    kp = np.array(keypoints, np.float64, copy=True)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(kp) & (np.abs(kp) <= MAX_COORD)).all(axis=-1)
    kp[bad] = MISSING
    return kp.astype(np.float32), int(bad.sum())


def flip_keypoints(keypoints: np.ndarray, width: int) -> np.ndarray:
    """Mirror (..., 18, 2) keypoints horizontally in an image `width` pixels wide, swapping sides.

    Pixel column x maps to width - 1 - x, the same as ``image[:, ::-1]``; missing stay missing.
    """
    kp = np.asarray(keypoints, np.float32)
    out = kp[..., list(FLIP_PERM), :].copy()
    ok = present(out)
    out[..., 0] = np.where(ok, (width - 1) - out[..., 0], out[..., 0])
    return out
