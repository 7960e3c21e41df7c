"""Keypoint estimators: RGB uint8 image -> OpenPose COCO-18 keypoints (18, 2) xy and scores (18,).

The MediaPipe backend runs the legacy BlazePose solution (weights inside the wheel, no downloads)
on a few padded/flipped views of the image and fuses them into one COCO-18 pose.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from pg2kit.keypoints import (
    BLAZEPOSE_TO_COCO18,
    FLIP_PERM,
    NUM_KEYPOINTS,
    TORSO,
    empty_keypoints,
)

# Correction added to each COCO-18 keypoint, (dx, dy) in torso lengths, dx towards the person's
# left. The measured BlazePose-vs-OpenPose offsets are small (<= 0.04 torso lengths except the
# ears, < 2 px on Market) and refitting them did not improve held-out PCK (docs/estimator.md), so
# the default is zero; the option stays for other reference sets.
DEFAULT_OFFSETS: tuple[tuple[float, float], ...] = ((0.0, 0.0),) * NUM_KEYPOINTS

# Fused visibility above which a keypoint is present. Lower trades PCK for presence agreement
# (Market 0.3: PCK 0.939, agreement 0.816; 0.7: 0.957, 0.740); per-keypoint refits did not hold
# up on held-out folds, so one global 0.5.
DEFAULT_VISIBILITY: tuple[float, ...] = (0.5,) * NUM_KEYPOINTS


def blazepose_to_coco18(
    landmarks: np.ndarray,
    width: int,
    height: int,
    visibility_threshold: float | np.ndarray = 0.5,
    margin: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Map BlazePose landmarks (33, 3) of (x, y, visibility) in pixels to COCO-18.

    A keypoint is present when its visibility exceeds its threshold (a scalar or an (18,) array)
    and it lies inside the `width` x `height` image, widened by `margin` pixels (points in the
    margin are clamped onto the border). The neck is the shoulder midpoint, present only when
    both shoulders are. Returns keypoints (18, 2) float32 xy (-1 missing) and scores (18,).
    """
    lm = np.asarray(landmarks, np.float32)
    thr = np.broadcast_to(np.asarray(visibility_threshold, np.float32), (NUM_KEYPOINTS,))
    kp, scores = empty_keypoints()
    for k, b in enumerate(BLAZEPOSE_TO_COCO18):
        if b is None:
            continue
        x, y, v = lm[b]
        inside = -margin <= x <= width - 1 + margin and -margin <= y <= height - 1 + margin
        if v > thr[k] and inside:
            kp[k] = (min(max(x, 0.0), width - 1), min(max(y, 0.0), height - 1))
            scores[k] = v
    if scores[2] > 0 and scores[5] > 0:
        kp[1] = (kp[2] + kp[5]) / 2
        scores[1] = min(scores[2], scores[5])
    return kp, scores


PAD_MODES = {
    "constant": "BORDER_CONSTANT",
    "edge": "BORDER_REPLICATE",
    "reflect": "BORDER_REFLECT_101",
}


@dataclass(frozen=True)
class View:
    """One MediaPipe run: the image scaled, padded onto a square canvas, optionally mirrored.

    `canvas` is the canvas side as a multiple of the scaled image's longer side; `pad` fills the
    border ("constant" black, "edge" replicate, "reflect"); `shift` moves the image off the canvas
    centre by that fraction of the free space, (dx, dy) in [-1, 1].
    """

    canvas: float = 1.0
    flip: bool = False
    pad: str = "constant"
    shift: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {sorted(PAD_MODES)}, not {self.pad!r}")
        if self.canvas < 1.0:
            raise ValueError(f"canvas must be >= 1, not {self.canvas}")


def render_view(
    image: np.ndarray, view: View, scale: float
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Scale `image` (H, W, 3) by `scale`, pad it onto a square canvas and mirror it if asked.

    Returns the canvas and (scale, x0, y0): where the scaled image's top-left corner sits on the
    canvas before mirroring, to map landmarks back.
    """
    import cv2

    h, w = image.shape[:2]
    if scale != 1.0:
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        image = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_CUBIC)
    else:
        sh, sw = h, w
    side = max(round(view.canvas * max(sh, sw)), sh, sw)
    free_x, free_y = side - sw, side - sh
    x0 = int(round(free_x / 2 * (1 + view.shift[0])))
    y0 = int(round(free_y / 2 * (1 + view.shift[1])))
    x0, y0 = min(max(x0, 0), free_x), min(max(y0, 0), free_y)
    if free_x or free_y:
        border = getattr(cv2, PAD_MODES[view.pad])
        image = cv2.copyMakeBorder(image, y0, free_y - y0, x0, free_x - x0, border, value=(0, 0, 0))
    if view.flip:
        image = image[:, ::-1]
    return np.ascontiguousarray(image), (float(sw) / w, float(x0), float(y0))


def landmarks_to_image(
    raw: np.ndarray, canvas_side: int, view: View, transform: tuple[float, float, float]
) -> np.ndarray:
    """Map normalised canvas landmarks (33, 3) of (x, y, visibility) to original-image pixels.

    A pixel's continuous extent is [i, i + 1) so its index is the continuous coordinate - 0.5.
    Mirrored views are mirrored back; their left/right labels are swapped later in COCO-18.
    """
    s, x0, y0 = transform
    out = np.array(raw, np.float32, copy=True)
    xc = out[:, 0] * canvas_side
    if view.flip:
        xc = canvas_side - xc
    out[:, 0] = (xc - x0) / s - 0.5
    out[:, 1] = (out[:, 1] * canvas_side - y0) / s - 0.5
    return out


def run_to_coco18(landmarks: np.ndarray, flipped: bool) -> tuple[np.ndarray, np.ndarray]:
    """One run's BlazePose landmarks (33, 3) in image pixels -> COCO-18 xy (18, 2), visibility (18,).

    No thresholds yet; a mirrored run's person-left/right labels are swapped back.
    """
    lm = np.asarray(landmarks, np.float32)
    idx = [0 if b is None else b for b in BLAZEPOSE_TO_COCO18]
    xy, vis = lm[idx, :2].copy(), lm[idx, 2].copy()
    xy[1] = (xy[2] + xy[5]) / 2
    vis[1] = min(vis[2], vis[5])
    if flipped:
        xy, vis = xy[list(FLIP_PERM)], vis[list(FLIP_PERM)]
    return xy, vis


def torso_length(xy: np.ndarray) -> float:
    """Distance (pixels) from the shoulder midpoint to the hip midpoint of a COCO-18 pose."""
    return float(np.linalg.norm((xy[2] + xy[5]) / 2 - (xy[8] + xy[11]) / 2))


def fuse_runs(
    runs: list[tuple[np.ndarray, np.ndarray]], agree: float, fusion: str = "mean"
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fuse COCO-18 runs [(xy (18, 2), vis (18,))] into one pose by consensus.

    The medoid run (smallest summed torso/head distance to the others, in torso lengths) is the
    anchor; runs within `agree` torso lengths of it are kept, and their coordinates are averaged
    per keypoint weighted by visibility. Returns xy, mean visibility and the number of runs kept.
    """
    if len(runs) == 1:
        return runs[0][0], runs[0][1], 1
    xys = np.stack([r[0] for r in runs])  # (R, 18, 2)
    vis = np.stack([r[1] for r in runs])  # (R, 18)
    core = [0, 1, 2, 5, 8, 11]  # nose, neck, shoulders, hips: stable under all views
    scale = np.median([max(torso_length(x), 1e-3) for x in xys])
    d = np.linalg.norm(xys[:, None, core] - xys[None, :, core], axis=-1).mean(-1) / scale
    # ties (always the case with two runs) go to the run MediaPipe is most confident about
    anchor = int(np.argmin(d.sum(1) - 1e-3 * vis.mean(1)))
    keep = d[anchor] <= agree
    if fusion == "median":
        xy = np.median(xys[keep], axis=0)
    else:
        w = vis[keep] + 1e-3  # (K, 18)
        xy = (xys[keep] * w[..., None]).sum(0) / w.sum(0)[:, None]
    xy[1] = (xy[2] + xy[5]) / 2
    return xy.astype(np.float32), vis[keep].mean(0).astype(np.float32), int(keep.sum())


@dataclass(frozen=True)
class MediaPipeConfig:
    """Picklable settings of MediaPipeEstimator (workers build their own estimator from it)."""

    # BlazePose detector threshold: 0.5 (MediaPipe's default) misses ~3% of Market crops.
    min_detection_confidence: float = 0.2
    # A fused pose whose four torso keypoints (shoulders, hips) have mean visibility below this
    # is no person: rejects the detector's false positives on textures without losing real ones.
    min_torso_visibility: float = 0.6
    # Images shorter than this are upscaled (bicubic) to this height; larger ones are not resized.
    upscale_height: int = 256
    # Images whose longer side exceeds this are downscaled to it (MediaPipe works at 224-256 px).
    max_side: int = 1280
    # Runs for images whose longer side is under `small_side` (e.g. Market crops), and the others.
    small_side: int = 200
    # Market crops: 3x canvases, black and edge-replicated border, each also mirrored (4 runs).
    views_small: tuple[View, ...] = (
        View(3.0, False, "constant"),
        View(3.0, True, "constant"),
        View(3.0, False, "edge"),
        View(3.0, True, "edge"),
    )
    # Larger images: as they are (letterboxed to a square) and mirrored (2 runs).
    views_large: tuple[View, ...] = (View(1.0, False), View(1.0, True))
    # Tried only when none of the views above finds a person (1-2% of images).
    fallback_small: tuple[View, ...] = (
        View(2.0, False, "constant"),
        View(2.0, True, "constant"),
        View(2.5, False, "edge"),
        View(2.5, True, "edge"),
    )
    fallback_large: tuple[View, ...] = (View(1.25, False), View(1.25, True))
    # Per-keypoint visibility thresholds (18,) applied to the fused visibility.
    visibility: tuple[float, ...] = DEFAULT_VISIBILITY
    # Out-of-frame tolerance in original pixels; points in it are clamped onto the border.
    margin: float = 0.0
    # Runs whose torso disagrees with the consensus by more than this (x torso length) are dropped.
    agree: float = 0.3
    # How kept runs are combined per keypoint: "mean" (visibility-weighted) or "median".
    fusion: str = "mean"
    offsets: tuple[tuple[float, float], ...] = DEFAULT_OFFSETS

    def tag(self) -> str:
        """Short string identifying the settings (goes into `estimator_version`)."""
        import hashlib

        digest = hashlib.sha1(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]
        return f"s{len(self.views_small)}l{len(self.views_large)}-{digest}"


@contextlib.contextmanager
def _quiet_stderr():
    """Send the process's file descriptor 2 to /dev/null for the duration (C++ logging too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class MediaPipeEstimator:
    """BlazePose (mediapipe legacy `solutions.pose`, model_complexity=1) -> OpenPose COCO-18.

    Each image is scaled (small ones up to `upscale_height` rows, huge ones down to `max_side`),
    padded onto square canvases and optionally mirrored (fallback views only if no view finds a
    person); the runs that find one are fused by consensus (`fuse_runs`), corrected for
    BlazePose-vs-OpenPose offsets and thresholded per keypoint. Pickling keeps only the configuration: each worker builds its own MediaPipe graph.
    """

    name = "mediapipe"

    def __init__(self, config: MediaPipeConfig | None = None, **options: Any) -> None:
        cfg = config or MediaPipeConfig()
        if "visibility" in options:
            vis = np.broadcast_to(np.asarray(options["visibility"], np.float64), (NUM_KEYPOINTS,))
            options["visibility"] = tuple(float(v) for v in vis)
        for key in ("views_small", "views_large", "fallback_small", "fallback_large"):
            if key in options:
                options[key] = tuple(v if isinstance(v, View) else View(*v) for v in options[key])
        self.config = replace(cfg, **options)
        if self.config.fusion not in ("mean", "median"):
            raise ValueError(f"fusion must be 'mean' or 'median', not {self.config.fusion!r}")
        if (
            len(self.config.visibility) != NUM_KEYPOINTS
            or len(self.config.offsets) != NUM_KEYPOINTS
        ):
            raise ValueError("visibility and offsets need one entry per COCO-18 keypoint")
        self._pose = None

    @property
    def version(self) -> str:
        import importlib.metadata

        return f"mediapipe-{importlib.metadata.version('mediapipe')}-{self.config.tag()}"

    def _graph(self):
        if self._pose is None:
            os.environ.setdefault("GLOG_minloglevel", "2")
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            # MediaPipe's C++ side prints start-up chatter (TFLite delegate, absl warnings) on the
            # first graph build and run; keep it off the user's terminal and progress bars.
            with _quiet_stderr():
                from mediapipe.python.solutions import pose as mp_pose

                self._pose = mp_pose.Pose(
                    static_image_mode=True,
                    model_complexity=1,
                    enable_segmentation=False,
                    min_detection_confidence=self.config.min_detection_confidence,
                )
                self._pose.process(np.zeros((64, 64, 3), np.uint8))
        return self._pose

    def run_views(self, image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run every configured view; COCO-18 (xy, visibility) in image pixels per detecting run."""
        image = _as_rgb(image)
        cfg = self.config
        h, w = image.shape[:2]
        scale = (
            max(1.0, cfg.upscale_height / h)
            if max(h, w) < cfg.max_side
            else cfg.max_side / max(h, w)
        )
        small = max(h, w) < cfg.small_side
        runs = self._run(image, cfg.views_small if small else cfg.views_large, scale)
        if not runs:
            runs = self._run(image, cfg.fallback_small if small else cfg.fallback_large, scale)
        return runs

    def _run(
        self, image: np.ndarray, views: tuple[View, ...], scale: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        pose = self._graph()
        runs = []
        for view in views:
            canvas, transform = render_view(image, view, scale)
            with _quiet_stderr():  # its landmark stage warns once per process on first use
                result = pose.process(canvas)
            if result.pose_landmarks is None:
                continue
            raw = np.array(
                [(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32
            )
            runs.append(
                run_to_coco18(landmarks_to_image(raw, canvas.shape[0], view, transform), view.flip)
            )
        return runs

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) -> keypoints (18, 2) float32 xy (-1 missing), scores (18,)."""
        image = _as_rgb(image)
        return self.finish(self.run_views(image), image.shape[1], image.shape[0])

    def finish(
        self, runs: list[tuple[np.ndarray, np.ndarray]], width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fuse the output of `run_views` into keypoints (18, 2) and scores (18,)."""
        if not runs:
            return empty_keypoints()
        return finish_pose(runs, self.config, width, height)

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __enter__(self) -> MediaPipeEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}  # never a live graph

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self._pose = None

    def __repr__(self) -> str:
        return f"MediaPipeEstimator({self.config!r})"


def finish_pose(
    runs: list[tuple[np.ndarray, np.ndarray]], cfg: MediaPipeConfig, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse detecting runs, correct offsets, threshold and clip: the estimator's last stage."""
    xy, vis, _ = fuse_runs(runs, cfg.agree, cfg.fusion)
    if vis[list(TORSO)].mean() < cfg.min_torso_visibility:
        return empty_keypoints()
    xy = apply_offsets(xy, np.asarray(cfg.offsets, np.float32))
    kp, scores = empty_keypoints()
    thr = np.asarray(cfg.visibility, np.float32)
    m = cfg.margin
    inside = (
        (xy[:, 0] >= -m)
        & (xy[:, 0] <= width - 1 + m)
        & (xy[:, 1] >= -m)
        & (xy[:, 1] <= height - 1 + m)
    )
    ok = (vis > thr) & inside
    ok[1] = ok[2] and ok[5]  # the neck exists only with both shoulders
    kp[ok] = np.clip(xy[ok], 0, [width - 1, height - 1])
    scores[ok] = vis[ok]
    return kp, scores


def apply_offsets(xy: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Shift COCO-18 xy (18, 2) by `offsets` (18, 2) given in torso lengths in the person's frame.

    dx is along the person's right-to-left shoulder direction (so it flips with the person), dy
    along image down. The neck is re-derived from the shifted shoulders.
    """
    if not np.any(offsets):
        return xy
    t = torso_length(xy)
    lateral = np.sign(xy[5, 0] - xy[2, 0]) or 1.0
    out = xy.copy()
    out[:, 0] += offsets[:, 0] * t * lateral
    out[:, 1] += offsets[:, 1] * t
    out[1] = (out[2] + out[5]) / 2
    return out


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] * image.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def make_estimator(spec: str = "mediapipe", **options: Any) -> MediaPipeEstimator:
    """Build an estimator by name ("mediapipe"); `options` go to its constructor."""
    if spec == "mediapipe":
        return MediaPipeEstimator(**options)
    raise ValueError(f"unknown estimator {spec!r} (known: mediapipe)")
