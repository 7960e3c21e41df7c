"""The built-in `synthetic` dataset: articulated, clothed human-like figures drawn with cv2 on
varied backgrounds, with exact OpenPose COCO-18 keypoints. Reads nothing; yields samples in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from pg2kit.keypoints import NUM_KEYPOINTS

NUM_CAMERAS = 6  # Market-1501 has six cameras; each one is a "scene" with its own colours
MIN_SIZE = (64, 32)  # smallest supported (height, width)

_SHIFT = 4  # cv2 fractional bits: coordinates are drawn with 1/16 px precision
_ONE = 1 << _SHIFT

# Part labels of the map drawn alongside each image (`render_sample`); 0 is the background.
LABELS = ("background", "skin", "hair", "top", "bottom", "shoes", "eyes")
_SKIN, _HAIR, _TOP, _BOTTOM, _SHOES, _DARK = 1, 2, 3, 4, 5, 6

# RGB palettes.
_SKIN_TONES = (
    (255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
    (92, 58, 30), (234, 192, 160), (200, 150, 120),
)  # fmt: skip
_HAIR_COLORS = (
    (20, 16, 14), (45, 30, 20), (85, 55, 30), (140, 100, 55), (200, 170, 110), (150, 150, 150),
    (110, 40, 20),
)  # fmt: skip
_BOTTOM_COLORS = (
    (40, 55, 95), (60, 80, 130), (25, 25, 30), (70, 70, 75), (130, 130, 135), (170, 150, 110),
    (90, 70, 50), (200, 200, 205), (60, 80, 50),
)  # fmt: skip
_SHOE_COLORS = ((20, 20, 20), (235, 235, 235), (90, 60, 40), (60, 60, 70), (150, 40, 40))
_PATTERNS = ("plain", "stripes", "checks", "dots")

# Body proportions in units of the standing height (ankle joint at 0.045 above the floor).
_ANKLE_H = 0.045
_SHIN, _THIGH = 0.24, 0.235
_TORSO = 0.295  # hip joints to shoulder line
_NECK = 0.035  # shoulder line to the bottom of the head
_UPPER_ARM, _FOREARM = 0.165, 0.145

# Unit face directions on the head ellipsoid, body frame (x = person's left, y = up, z = forward),
# and the least depth component (towards the camera) at which each point is still visible.
_FACE_DIRS = {
    0: ((0.0, -0.15, 1.05), -0.2),  # nose, protrudes slightly
    14: ((-0.38, 0.12, 0.92), 0.05),  # right eye
    15: ((0.38, 0.12, 0.92), 0.05),  # left eye
    16: ((-0.9, -0.02, -0.05), -0.35),  # right ear
    17: ((0.9, -0.02, -0.05), -0.35),  # left ear
}


@dataclass(frozen=True, eq=False)
class SyntheticSample:
    """One generated image with its ground-truth keypoints and Market-style naming."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    keypoints: np.ndarray  # float32 (18, 2) (x, y) pixels; missing = (-1, -1)
    scores: np.ndarray  # float32 (18,): 1 present, 0 missing
    identity: str  # '0007' (1-based)
    name: str  # '0007_c3s1_000002_00.jpg'
    split: str  # 'train' | 'test'
    camera: int  # 1..6


@dataclass(frozen=True)
class _Identity:
    """Everything about a person that stays the same across their images."""

    height: float  # fraction of the nominal standing height (0.92 .. 1.0)
    width: float  # multiplies widths and limb thickness
    head: float  # multiplies the head size
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    long_hair: bool
    top: tuple[int, int, int]
    top2: tuple[int, int, int]  # second colour of the pattern
    pattern: str
    period: float  # pattern period in units of the height
    long_sleeves: bool
    bottom: tuple[int, int, int]
    shorts: bool
    shoes: tuple[int, int, int]


# ----------------------------------------------------------------------------- public API


def split_of(index: int, num_identities: int, test_fraction: float) -> str:
    """'test' for the last round(num_identities * test_fraction) of 1-based identity indices."""
    num_test = min(num_identities, max(0, int(round(num_identities * test_fraction))))
    return "test" if index > num_identities - num_test else "train"


def sample_name(identity: int, camera: int, pose: int) -> str:
    """Market-1501 style file name, e.g. '0007_c3s1_000002_00.jpg'."""
    return f"{identity:04d}_c{camera}s1_{pose:06d}_00.jpg"


def generate(
    num_identities: int = 40,
    num_poses: int = 8,
    size: tuple[int, int] = (128, 64),
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Iterator[SyntheticSample]:
    """Yield num_identities x num_poses samples of (height, width) `size`, identity by identity.

    Each sample depends only on (seed, identity, pose), never on the iteration order. The last
    `test_fraction` of the identities form the test split.
    """
    if not 1 <= num_identities <= 9999:
        raise ValueError(f"num_identities must be in 1..9999 (4-digit names), got {num_identities}")
    if num_poses < 1:
        raise ValueError(f"num_poses must be >= 1, got {num_poses}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    _check_size(size)
    for index in range(1, num_identities + 1):
        split = split_of(index, num_identities, test_fraction)
        for pose in range(num_poses):
            sample, _ = render_sample(index, pose, size=size, seed=seed, split=split)
            yield sample


def render_sample(
    identity: int,
    pose: int,
    size: tuple[int, int] = (128, 64),
    seed: int = 0,
    split: str = "train",
) -> tuple[SyntheticSample, np.ndarray]:
    """Draw pose number `pose` of 1-based `identity`; also return its part label map.

    The label map is uint8 (H, W) with indices into `LABELS` (0 = background), drawn with the same
    geometry as the image but without antialiasing; ``labels > 0`` is the figure's silhouette.
    """
    if identity < 1 or pose < 0:
        raise ValueError(f"identity must be >= 1 and pose >= 0, got {identity}, {pose}")
    height, width = _check_size(size)
    person = _identity(seed, identity)
    rng = np.random.default_rng([seed, 2, identity, pose])
    camera = int(rng.integers(1, NUM_CAMERAS + 1))  # the first draw: see sample_camera
    studio = width >= 0.75 * height  # square frames look like DeepFashion: plain studio walls

    joints, radii, view = _pose(rng, person)
    frame = _framing(rng, joints, height, width, studio)
    image = _background(seed, camera, rng, height, width, studio)
    labels = np.zeros((height, width), np.uint8)
    keypoints = _draw_figure(image, labels, joints, radii, view, frame, person)
    image = _finish(image, rng, seed)

    scores = (keypoints[:, 0] >= 0).astype(np.float32)
    sample = SyntheticSample(
        image=image,
        keypoints=keypoints,
        scores=scores,
        identity=f"{identity:04d}",
        name=sample_name(identity, camera, pose),
        split=split,
        camera=camera,
    )
    return sample, labels


def sample_camera(identity: int, pose: int, seed: int = 0) -> int:
    """The camera `render_sample` gives (identity, pose), without drawing the figure."""
    return int(np.random.default_rng([seed, 2, identity, pose]).integers(1, NUM_CAMERAS + 1))


@lru_cache(maxsize=4)
def _rendered(identity: int, pose: int, size: tuple[int, int], seed: int, split: str):
    return render_sample(identity, pose, size=size, seed=seed, split=split)[0]


@dataclass(frozen=True)
class Synthetic:
    """The built-in figures as a dataset adapter: `scan` lists them (nothing is read), `load`
    draws one, `truth` gives its exact keypoints. Picklable; the workers do the drawing."""

    num_identities: int = 40
    num_poses: int = 8
    size: tuple[int, int] = (128, 64)  # image (height, width)
    seed: int = 0
    test_fraction: float = 0.2
    name: str = "synthetic"
    csv_prefix: str = "synthetic"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _check_size(self.size))
        if not 1 <= self.num_identities <= 9999:
            raise ValueError(f"num_identities must be in 1..9999, got {self.num_identities}")
        if self.num_poses < 1:
            raise ValueError(f"num_poses must be >= 1, got {self.num_poses}")

    @property
    def frame(self) -> tuple[int, int, int]:
        return (self.size[0], self.size[1], 0)

    def scan(self, src=None):
        """Records identity by identity, pose by pose (the generation order); `key` = (id, pose)."""
        from pg2kit.datasets.base import Record, ScanResult

        result = ScanResult()
        for index in range(1, self.num_identities + 1):
            split = split_of(index, self.num_identities, self.test_fraction)
            for pose in range(self.num_poses):
                camera = sample_camera(index, pose, self.seed)
                name = sample_name(index, camera, pose)
                record = Record(name=name, path=None, rel_path=f"synthetic/{name}", split=split,
                                identity=f"{index:04d}", camera=camera, key=(index, pose))  # fmt: skip
                result.records.setdefault(split, []).append(record)
        return result

    def _sample(self, record) -> SyntheticSample:
        index, pose = record.key
        return _rendered(index, pose, self.size, self.seed, record.split)

    def load(self, record) -> np.ndarray:
        return self._sample(record).image

    def truth(self, record) -> tuple[np.ndarray, np.ndarray]:
        """The figure's exact keypoints (18, 2) and scores (18,)."""
        sample = self._sample(record)
        return sample.keypoints, sample.scores

    def finalize(self, image, keypoints, scores):
        """The drawn image is already the stored frame."""
        return image, keypoints, scores


# ----------------------------------------------------------------------------- identities


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = (int(v) for v in size)
    if height < MIN_SIZE[0] or width < MIN_SIZE[1]:
        raise ValueError(f"size must be at least {MIN_SIZE[0]}x{MIN_SIZE[1]} (HxW), got {size}")
    return height, width


def _pick(rng: np.random.Generator, options: tuple) -> tuple:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, color: tuple[int, int, int], amount: int) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)


def _hsv_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated clothing colour (RGB) with a random hue."""
    hsv = np.array(
        [[[rng.integers(0, 180), rng.integers(90, 256), rng.integers(90, 246)]]], np.uint8
    )
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


@lru_cache(maxsize=4096)
def _identity(seed: int, index: int) -> _Identity:
    rng = np.random.default_rng([seed, 1, index])
    if rng.random() < 0.3:  # neutral tops (white, grey, black) are common in street photos
        v = int(rng.choice([25, 60, 120, 200, 235]))
        top = (v, v, v)
    else:
        top = _hsv_color(rng)
    pattern = _PATTERNS[int(rng.choice(4, p=[0.4, 0.25, 0.15, 0.2]))]
    top2 = _hsv_color(rng)
    # Make sure the pattern is visible: the second colour must differ enough in brightness.
    if abs(sum(top2) - sum(top)) < 150:
        top2 = tuple(255 - c for c in top) if sum(top) < 380 else tuple(c // 4 for c in top)
    return _Identity(
        height=float(rng.uniform(0.92, 1.0)),
        width=float(rng.uniform(0.85, 1.2)),
        head=float(rng.uniform(0.9, 1.1)),
        skin=_jitter(rng, _pick(rng, _SKIN_TONES), 8),
        hair=_jitter(rng, _pick(rng, _HAIR_COLORS), 8),
        long_hair=bool(rng.random() < 0.35),
        top=top,
        top2=top2,
        pattern=pattern,
        period=float(rng.uniform(0.03, 0.05)),
        long_sleeves=bool(rng.random() < 0.5),
        bottom=_jitter(rng, _pick(rng, _BOTTOM_COLORS), 10),
        shorts=bool(rng.random() < 0.2),
        shoes=_jitter(rng, _pick(rng, _SHOE_COLORS), 10),
    )


# ----------------------------------------------------------------------------- pose


def _direction(abduction: float, flexion: float, side: float) -> np.ndarray:
    """Unit limb direction (body frame): hanging down, swung out to `side` (-1 right, +1 left)
    by `abduction` degrees, then forward by `flexion` degrees."""
    a, f = math.radians(abduction), math.radians(flexion)
    return np.array(
        [side * math.sin(a), -math.cos(a) * math.cos(f), math.cos(a) * math.sin(f)], np.float64
    )


def _arm_angles(rng: np.random.Generator, kind: str, swing: float) -> tuple[float, ...]:
    """(upper abduction, upper flexion, forearm abduction, forearm flexion) in degrees."""
    u = rng.uniform
    if kind == "down":
        a1, f1 = u(4, 14), u(-10, 10)
        return a1, f1, a1 + u(-4, 4), f1 + u(0, 25)
    if kind == "swing":
        a1, f1 = u(4, 12), swing
        return a1, f1, a1 + u(-3, 3), f1 + u(10, 35)
    if kind == "raised":
        a1, f1 = u(70, 165), u(-10, 25)
        return a1, f1, min(180.0, a1 + u(-25, 30)), f1 + u(-10, 10)
    if kind == "hip":  # hand on the hip: elbow out, forearm back towards the body
        a1, f1 = u(35, 55), u(-25, -5)
        return a1, f1, -u(25, 55), f1 + u(-10, 10)
    if kind == "forward":  # reaching or pointing
        a1, f1 = u(0, 20), u(45, 90)
        return a1, f1, a1 + u(-10, 10), f1 + u(0, 20)
    # "carry": upper arm down, forearm forward (bag, phone)
    a1, f1 = u(3, 12), u(-5, 20)
    return a1, f1, a1 + u(-20, 5), f1 + u(60, 110)


def _pose(rng: np.random.Generator, person: _Identity) -> tuple[dict, dict, dict]:
    """Body-frame 3-D joints (units of the height), drawing radii and the view of one pose."""
    u = rng.uniform
    kind = rng.choice(["stand", "walk", "raised", "hip", "forward", "carry"],
                      p=[0.28, 0.32, 0.12, 0.1, 0.08, 0.1])  # fmt: skip
    view = rng.choice(["front", "back", "side", "three"], p=[0.4, 0.2, 0.25, 0.15])
    if view == "front":
        yaw = u(-25, 25)
    elif view == "back":
        yaw = 180 + u(-25, 25)
    elif view == "side":
        yaw = rng.choice([-1, 1]) * (90 + u(-15, 15))
    else:
        yaw = rng.choice([-1, 1]) * (45 + u(-10, 10))

    swing = u(10, 28) * rng.choice([-1, 1]) if kind == "walk" else 0.0
    arms = {}
    for side, sign in ((-1, 1), (1, -1)):  # right arm swings with the left leg
        arm_kind = {"stand": "down", "walk": "swing", "carry": "down"}.get(kind, kind)
        if kind in ("raised", "hip", "forward") and rng.random() < 0.4:
            arm_kind = "down"  # one arm only
        if kind == "carry" and side == int(rng.choice([-1, 1])):
            arm_kind = "carry"
        arms[side] = _arm_angles(rng, arm_kind, sign * swing * 0.8)
    legs = {}
    for side, sign in ((-1, -1), (1, 1)):
        if kind == "walk":
            flex = sign * swing
            knee = u(15, 35) if flex < 0 else u(0, 10)  # the trailing leg bends
            legs[side] = (u(0, 5), flex, knee)
        else:
            legs[side] = (u(0, 9), u(-6, 6), u(0, 6))

    w, hs = person.width, person.head
    j: dict[str, np.ndarray] = {}
    hip_y = _ANKLE_H + _SHIN + _THIGH
    for side, name in ((-1, "r"), (1, "l")):
        abd, flex, knee = legs[side]
        hip = np.array([side * 0.055 * w, hip_y, 0.0])
        knee_p = hip + _THIGH * _direction(abd, flex, side)
        ankle = knee_p + _SHIN * _direction(abd * 0.5, flex - knee, side)
        j[name + "_hip"], j[name + "_knee"], j[name + "_ankle"] = hip, knee_p, ankle
    lift = _ANKLE_H - min(j["r_ankle"][1], j["l_ankle"][1])  # lowest foot on the floor
    for k in list(j):
        j[k] = j[k] + np.array([0.0, lift, 0.0])
    pelvis = (j["r_hip"] + j["l_hip"]) / 2
    lean = np.array([u(-0.02, 0.02), 0.0, u(-0.01, 0.03)])  # sideways and forward lean
    neck = pelvis + np.array([0.0, _TORSO, 0.0]) + lean
    j["pelvis"], j["neck"] = pelvis, neck
    for side, name in ((-1, "r"), (1, "l")):
        a1, f1, a2, f2 = arms[side]
        shoulder = neck + np.array([side * 0.1 * w, -0.008, 0.0])
        elbow = shoulder + _UPPER_ARM * _direction(a1, f1, side)
        wrist = elbow + _FOREARM * _direction(a2, f2, side)
        j[name + "_shoulder"], j[name + "_elbow"], j[name + "_wrist"] = shoulder, elbow, wrist
    head_ry, head_rx = 0.062 * hs, 0.05 * hs
    j["head"] = neck + np.array([lean[0] * 0.5, _NECK + head_ry, 0.012])
    radii = {
        "head_rx": head_rx,
        "head_ry": head_ry,
        "neck": 0.026 * w,
        "upper_arm": 0.029 * w,
        "forearm": 0.023 * w,
        "hand": 0.024 * w,
        "thigh": 0.047 * w,
        "shin": 0.033 * w,
        "shoulder_hw": 0.118 * w,  # outline half-widths of the torso
        "waist_hw": 0.085 * w,
        "pelvis_hw": 0.092 * w,
        "depth_hw": 0.06 * w,
    }
    head_yaw = yaw + u(-12, 12)
    return j, radii, {"yaw": yaw, "head_yaw": head_yaw, "kind": kind}


def _rotate(points: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Rotate body-frame points (..., 3) about the vertical axis; +z then points at the camera."""
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return np.stack([x * c + z * s, y, -x * s + z * c], axis=-1)


def _rotate1(x: float, y: float, z: float, yaw_deg: float) -> tuple[float, float, float]:
    """`_rotate` for one point, without numpy overhead."""
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    return x * c + z * s, y, -x * s + z * c


def _framing(
    rng: np.random.Generator, joints: dict, height: int, width: int, studio: bool
) -> tuple[float, float, float]:
    """(pixels per unit height, x of the body axis, y of the floor) for one image."""
    u = rng.uniform
    top = joints["head"][1] + 0.062
    if rng.random() < (0.12 if studio else 0.06):  # close crop: feet (and maybe knees) cut off
        scale = u(1.1, 1.35) * height / top
        head_top = u(0.02, 0.06) * height
    else:
        scale = u(0.8, 0.92) * height / top
        head_top = (height - scale * top) / 2 + u(-0.03, 0.03) * height
    cx = width / 2 + u(-0.07, 0.07) * width
    floor = head_top + scale * top
    return scale, cx, floor


# ----------------------------------------------------------------------------- drawing


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


class _Painter:
    """Draws every shape antialiased on the image and aliased (same geometry) on a label map."""

    def __init__(self, image: np.ndarray, labels: np.ndarray):
        self.image, self.labels = image, labels

    def circle(self, c, r, color, label):
        p, rr = _pt(*c), int(round(r * _ONE))
        cv2.circle(self.image, p, rr, color, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(self.labels, p, rr, label, -1, cv2.LINE_8, _SHIFT)

    def ellipse(self, c, axes, angle, color, label, start=0, end=360):
        p, ax = _pt(*c), _pt(*axes)
        cv2.ellipse(self.image, p, ax, angle, start, end, color, -1, cv2.LINE_AA, _SHIFT)
        cv2.ellipse(self.labels, p, ax, angle, start, end, label, -1, cv2.LINE_8, _SHIFT)

    def polygon(self, pts, color, label):
        p = np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32)
        cv2.fillConvexPoly(self.image, p, color, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(self.labels, p, label, cv2.LINE_8, _SHIFT)

    def capsule(self, a, b, ra, rb, color, label):
        """A tapered limb: circles of radius ra at a and rb at b joined by their tangent quad."""
        ax, ay = float(a[0]), float(a[1])
        bx, by = float(b[0]), float(b[1])
        n = math.hypot(bx - ax, by - ay)
        if n > 1e-6:
            px, py = (ay - by) / n, (bx - ax) / n  # unit normal of the axis
            quad = [
                (ax + px * ra, ay + py * ra), (bx + px * rb, by + py * rb),
                (bx - px * rb, by - py * rb), (ax - px * ra, ay - py * ra),
            ]  # fmt: skip
            self.polygon(quad, color, label)
        self.circle((ax, ay), ra, color, label)
        self.circle((bx, by), rb, color, label)


def _shade(color: tuple, factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in color)


def _draw_figure(
    image: np.ndarray,
    labels: np.ndarray,
    joints: dict,
    radii: dict,
    view: dict,
    frame: tuple[float, float, float],
    person: _Identity,
) -> np.ndarray:
    """Draw the figure in depth order; return its (18, 2) keypoints with hidden/cut ones missing."""
    scale, cx, floor = frame
    height, width = labels.shape
    yaw = view["yaw"]
    names = list(joints)
    world = _rotate(np.stack([joints[k] for k in names]), yaw)
    # Image coordinates (x right, y down) and depth (larger = nearer the camera).
    img = {k: (cx + scale * p[0], floor - scale * p[1]) for k, p in zip(names, world, strict=True)}
    depth = {k: float(p[2]) for k, p in zip(names, world, strict=True)}
    r = {k: v * scale for k, v in radii.items()}
    paint = _Painter(image, labels)

    # Contact shadow on the floor.
    feet_x = (img["r_ankle"][0] + img["l_ankle"][0]) / 2
    shadow = np.zeros_like(labels)
    cv2.ellipse(shadow, _pt(feet_x, floor - 0.01 * scale), _pt(0.17 * scale, 0.025 * scale), 0,
                0, 360, 1, -1, cv2.LINE_8, _SHIFT)  # fmt: skip
    image[shadow > 0] = (image[shadow > 0] * 0.7).astype(np.uint8)

    # Torso outline: convex hulls of boxes (half-width x half-depth) at three heights.
    def box(center: np.ndarray, hw: float, lift: float) -> np.ndarray:
        dx = np.array([[-hw, 0, -radii["depth_hw"]], [hw, 0, -radii["depth_hw"]],
                       [hw, 0, radii["depth_hw"]], [-hw, 0, radii["depth_hw"]]])  # fmt: skip
        pts = _rotate(center + dx + np.array([0.0, lift, 0.0]), yaw)
        return np.stack([cx + scale * pts[:, 0], floor - scale * pts[:, 1]], axis=1)

    pelvis, neck = joints["pelvis"], joints["neck"]
    waist = pelvis + (neck - pelvis) * 0.22
    shoulders = box(neck, radii["shoulder_hw"], 0.012)  # the outline rises above the joints
    chest = box(neck + (pelvis - neck) * 0.25, radii["shoulder_hw"] * 0.97, 0.0)
    waist_box = box(waist, radii["waist_hw"], 0.0)
    crotch = box(pelvis, radii["pelvis_hw"] * 0.8, -0.045)
    hips = box(pelvis, radii["pelvis_hw"], -0.01)
    torso_poly = cv2.convexHull(np.concatenate([shoulders, chest, waist_box]).astype(np.float32))
    torso_poly = torso_poly[:, 0].astype(np.float64)
    pelvis_poly = cv2.convexHull(np.concatenate([waist_box, hips, crotch]).astype(np.float32))
    pelvis_poly = pelvis_poly[:, 0].astype(np.float64)

    skin, top, bottom = person.skin, person.top, person.bottom
    sleeve = top if person.long_sleeves else skin
    shin_color = skin if person.shorts else bottom

    def arm(side: str) -> None:
        far = 0.8 if depth[side + "_shoulder"] < -0.02 else 1.0  # the far side sits in shadow
        s, e, w = img[side + "_shoulder"], img[side + "_elbow"], img[side + "_wrist"]
        paint.capsule(s, e, r["upper_arm"], r["upper_arm"] * 0.9, _shade(top, far), _TOP)
        lab = _TOP if person.long_sleeves else _SKIN
        paint.capsule(e, w, r["forearm"], r["forearm"] * 0.85, _shade(sleeve, far), lab)
        paint.circle(w, r["hand"], _shade(skin, far), _SKIN)

    def leg(side: str) -> None:
        far = 0.8 if depth[side + "_hip"] < -0.02 else 1.0
        h, k, a = img[side + "_hip"], img[side + "_knee"], img[side + "_ankle"]
        paint.capsule(h, k, r["thigh"], r["thigh"] * 0.8, _shade(bottom, far), _BOTTOM)
        lab = _SKIN if person.shorts else _BOTTOM
        paint.capsule(k, a, r["shin"], r["shin"] * 0.8, _shade(shin_color, far), lab)
        # The shoe points where the person faces: forward in the body frame, projected.
        ankle3 = joints[side + "_ankle"]
        toe3 = _rotate1(ankle3[0], ankle3[1] - 0.03, ankle3[2] + 0.07, yaw)
        toe = (cx + scale * toe3[0], floor - scale * toe3[1])
        paint.capsule(a, toe, r["shin"] * 0.85, r["shin"] * 0.7, _shade(person.shoes, far), _SHOES)

    def torso() -> None:
        paint.polygon(pelvis_poly, bottom, _BOTTOM)
        paint.polygon(torso_poly, top, _TOP)
        for side in ("r", "l"):  # rounded shoulders
            paint.circle(img[side + "_shoulder"], r["upper_arm"] * 1.15, top, _TOP)

    # Painter's algorithm: limbs behind the torso first, then the torso, then the near limbs.
    parts = [(0.0, 0, torso)]
    arm_behind = {}
    for side in ("r", "l"):
        limb = [side + "_shoulder", side + "_elbow", side + "_wrist"]
        d = sum(depth[k] for k in limb) / 3
        arm_behind[side] = d + 0.01 < 0.0
        parts.append((d + 0.01, 2, lambda s=side: arm(s)))
        parts.append((depth[side + "_hip"] + 0.015, 1, lambda s=side: leg(s)))
    parts.sort(key=lambda p: (p[0], p[1]))
    for _, _, draw in parts:
        draw()
    face = _draw_head(paint, img["head"], r, view, person, joints, scale, yaw, cx, floor)
    _apply_pattern(image, labels, person, scale, img["neck"])

    # Keypoints in COCO-18 order.
    order = {
        1: "neck", 2: "r_shoulder", 3: "r_elbow", 4: "r_wrist", 5: "l_shoulder", 6: "l_elbow",
        7: "l_wrist", 8: "r_hip", 9: "r_knee", 10: "r_ankle", 11: "l_hip", 12: "l_knee",
        13: "l_ankle",
    }  # fmt: skip
    kp = np.full((NUM_KEYPOINTS, 2), -1.0, np.float32)
    for i, k in order.items():
        kp[i] = img[k]
    kp[1] = ((kp[2][0] + kp[5][0]) / 2, (kp[2][1] + kp[5][1]) / 2)  # neck = shoulder midpoint
    for i, p in face.items():
        kp[i] = p if p is not None else (-1.0, -1.0)
    # An elbow or wrist of an arm drawn behind the torso is hidden when the torso covers it.
    polys = (torso_poly.astype(np.float32), pelvis_poly.astype(np.float32))
    for i, k in ((3, "r_elbow"), (4, "r_wrist"), (6, "l_elbow"), (7, "l_wrist")):
        if arm_behind[k[0]] and depth[k] < -0.02:
            pt = (float(kp[i][0]), float(kp[i][1]))
            inside = max(cv2.pointPolygonTest(poly, pt, True) for poly in polys)
            if inside > 0.5 * r["forearm"]:  # pixels inside the outline
                kp[i] = -1.0
    # Points outside the frame are missing.
    out = (kp[:, 0] < 0) | (kp[:, 0] > width - 1) | (kp[:, 1] < 0) | (kp[:, 1] > height - 1)
    kp[out] = -1.0
    return kp


def _apply_pattern(
    image: np.ndarray, labels: np.ndarray, person: _Identity, scale: float, origin: tuple
) -> None:
    """Overlay the identity's pattern on the visible top: shift those pixels to the 2nd colour."""
    if person.pattern == "plain":
        return
    period = max(3.0, person.period * scale)  # pixels
    yy, xx = _grid(*labels.shape)
    y = (yy - origin[1]) / period
    x = (xx - origin[0]) / period
    if person.pattern == "stripes":
        on = (np.floor(y) % 2) == 1
    elif person.pattern == "checks":
        on = ((np.floor(y) + np.floor(x)) % 2) == 1
    else:  # dots of radius 0.3 period on a square lattice
        on = (y - np.round(y)) ** 2 + (x - np.round(x)) ** 2 < 0.09
    sel = on & (labels == _TOP)
    delta = np.asarray(person.top2, np.int16) - np.asarray(person.top, np.int16)
    image[sel] = np.clip(image[sel].astype(np.int16) + delta, 0, 255).astype(np.uint8)


@lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre row and column coordinates, float32 (H, W) each."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return yy, xx


def _draw_head(paint, center, r, view, person, joints, scale, yaw, cx, floor) -> dict:
    """Neck, hair, face, ears and eyes; return image positions of keypoints 0, 14-17 (or None)."""
    head_yaw = view["head_yaw"]
    rx, ry = r["head_rx"], r["head_ry"]
    n3 = joints["neck"]
    neck_img = (cx + scale * _rotate1(n3[0], n3[1], n3[2], yaw)[0], floor - scale * n3[1])
    paint.capsule(neck_img, (center[0], center[1] + 0.5 * ry), r["neck"], r["neck"], person.skin,
                  _SKIN)  # fmt: skip

    facing = math.cos(math.radians(head_yaw))  # +1 facing the camera, -1 facing away
    sideways = math.sin(math.radians(head_yaw))  # > 0: the face points to image-right
    if person.long_hair:  # hair falling to the shoulders behind the head
        hb = (center[0] - sideways * 0.3 * rx, center[1] + 0.9 * ry)
        paint.ellipse(hb, (rx * 1.05, ry * 1.0), 0, person.hair, _HAIR)
    paint.ellipse(center, (rx, ry), 0, person.skin, _SKIN)
    # Hair: a cap over the top of the skull, reaching further down at the back of the head.
    cap_c = (center[0] - sideways * 0.18 * rx, center[1] - 0.3 * ry)
    paint.ellipse(cap_c, (rx * 1.06, ry * 0.78), 0, person.hair, _HAIR, 180, 360)
    if facing < 0.3:  # seen from the back or the side: the back of the head is hair
        back = max(0.0, 1.0 - facing - 0.7)
        bc = (center[0] - sideways * rx * 0.25, center[1] - 0.05 * ry)
        paint.ellipse(bc, (rx * min(1.0, 0.55 + back * 0.35), ry * 0.9), 0, person.hair, _HAIR)

    face: dict[int, tuple[float, float] | None] = {}
    for i, (d, min_depth) in _FACE_DIRS.items():
        p = _rotate1(d[0] * rx, d[1] * ry, d[2] * rx, head_yaw)
        face[i] = (center[0] + p[0], center[1] - p[1]) if p[2] / rx >= min_depth else None
    for i in (16, 17):  # ears
        if face[i] is not None:
            paint.ellipse(face[i], (0.22 * rx, 0.32 * ry), 0, _shade(person.skin, 0.9), _SKIN)
    if face[0] is not None and abs(sideways) > 0.5:  # profile: the nose sticks out
        paint.circle(face[0], 0.2 * rx, person.skin, _SKIN)
    for i in (14, 15):  # eyes: dark dots, at least one pixel
        if face[i] is not None:
            paint.circle(face[i], max(0.6, 0.11 * rx), (50, 35, 30), _DARK)
    return face


# ----------------------------------------------------------------------------- background


@lru_cache(maxsize=256)
def _scene(seed: int, camera: int) -> tuple:
    """Colours of a camera's scene: wall top/bottom, floor, floor-line height (fraction of H)."""
    rng = np.random.default_rng([seed, 3, camera])
    wall = _muted(rng, 80, 210)
    wall2 = np.clip(wall + rng.integers(-40, 41), 0, 255)
    floor = _muted(rng, 60, 170)
    return wall, wall2, floor, float(rng.uniform(0.6, 0.85))


def _muted(rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    """A weakly saturated RGB colour (walls, pavement, asphalt), int64 (3,)."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(0, 80), rng.integers(low, high)]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.int64)


@lru_cache(maxsize=16)
def _noise_tile(height: int, width: int, seed: int) -> np.ndarray:
    """Fixed Gaussian sensor noise (sd 1) larger than the frame; images take a random window."""
    rng = np.random.default_rng([seed, 4, height, width])
    return rng.standard_normal((height + 32, width + 32, 3)).astype(np.float32)


def _background(
    seed: int, camera: int, rng: np.random.Generator, height: int, width: int, studio: bool
) -> np.ndarray:
    """uint8 (H, W, 3): vertical gradient wall, floor below a line, a few objects, blurred."""
    u = rng.uniform
    if studio:
        base = np.full(3, u(170, 245)) + rng.integers(-12, 13, 3)
        wall, wall2, floor = base, base - u(5, 30), base - u(10, 40)
        line = u(0.8, 0.95)
    else:
        wall, wall2, floor, line = _scene(seed, camera)
        jit = rng.integers(-20, 21, 3)
        wall, wall2, floor = wall + jit, wall2 + jit, floor + rng.integers(-20, 21, 3)
        line += u(-0.06, 0.06)
    line_y = int(line * height)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    col = (1 - t) * np.asarray(wall, np.float32) + t * np.asarray(wall2, np.float32)  # (H, 3)
    fl = np.asarray(floor, np.float32)
    col[line_y:] = fl * (0.9 + 0.2 * t[line_y:])  # floor gets brighter towards the camera
    image = np.ascontiguousarray(
        np.broadcast_to(np.clip(col, 0, 255).astype(np.uint8)[:, None, :], (height, width, 3))
    )
    if not studio:  # doors, windows, poles, passers-by: muted rectangles
        for _ in range(int(rng.integers(1, 4))):
            x0, w = u(-0.2, 1.0) * width, u(0.1, 0.5) * width
            y0, h = u(0.0, 0.5) * height, u(0.15, 0.6) * height
            c = np.clip(_muted(rng, 40, 230) + rng.integers(-15, 16, 3), 0, 255)
            cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + w), int(min(y0 + h, line_y))),
                          tuple(int(v) for v in c), -1)  # fmt: skip
        cv2.line(image, (0, line_y), (width, line_y), tuple(int(v * 0.6) for v in floor), 1)
    k = 3 if height <= 160 else 5
    return cv2.GaussianBlur(image, (k, k), 0)


def _finish(image: np.ndarray, rng: np.random.Generator, seed: int) -> np.ndarray:
    """Per-image lighting (gain and colour cast) and sensor noise; uint8 (H, W, 3)."""
    height, width = image.shape[:2]
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.94, 1.06, 3)
    tile = _noise_tile(height, width, seed)
    oy, ox = (int(v) for v in rng.integers(0, 32, 2))
    sigma = rng.uniform(2.0, 5.0)
    out = image.astype(np.float32) * gain.astype(np.float32)
    out += tile[oy : oy + height, ox : ox + width] * np.float32(sigma)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)
