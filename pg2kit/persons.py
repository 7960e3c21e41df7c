"""Find every person in an RGB image and estimate each one's keypoints on their own crop.

Detector: BlazePose's own SSD person detector (`pose_detection.tflite` inside the mediapipe wheel,
run with the `ai-edge-litert` interpreter) over a pyramid of overlapping tiles; where no accepted
person is, MediaPipe's selfie segmentation (also inside the wheel) on square tiles proposes more
(a person-shaped mask component becomes a candidate with its own box). Keypoints: the
MediaPipeEstimator on a crop around each detected person, mapped back to source pixels, then
quality gates (size, frame edge, occlusion, keypoints/detector agreement) set `Person.reason`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from pg2kit.keypoints import NUM_KEYPOINTS

DETECTOR_INPUT = 224  # the detector's square input side (pixels)
ROI_SIDE = 256  # the landmark model's square input side (pixels)
SEGMENT_INPUT = 256  # the selfie segmentation model's square input side (pixels)
# Detector output: 12 values per anchor = face box (cx, cy, w, h) + 4 keypoints (x, y):
# 0 mid-hip, 1 a point beyond the head whose distance to the hip gives the body's size and
# rotation (MediaPipe's full-body ROI is a square of side 2 * |kp1 - kp0| around the hip),
# 2 mid-shoulder, 3 the upper-body size point.
_STRIDES = ((8, 2), (16, 2), (32, 6))  # (stride, anchors per cell): 28*28*2 + 14*14*2 + 7*7*6
TORSO_KEYPOINTS = (2, 5, 8, 11)  # shoulders and hips (COCO-18)
DUPLICATE = "duplicate:"  # reason prefix of a second detection of the same person


def _model_path(kind: str = "pose_detection") -> str:
    """Path of a MediaPipe model inside the installed mediapipe wheel (never downloaded)."""
    import mediapipe

    sub = {
        "pose_detection": "pose_detection",
        "pose_landmark_full": "pose_landmark",
        "selfie_segmentation": "selfie_segmentation",
    }[kind]
    path = os.path.join(os.path.dirname(mediapipe.__file__), "modules", sub, f"{kind}.tflite")
    if not os.path.isfile(path):
        raise RuntimeError(f"MediaPipe model not found in the mediapipe wheel: {path}")
    return path


def detector_anchors() -> np.ndarray:
    """SSD anchor centres (2254, 2) in [0, 1] input coordinates, in the model's output order."""
    out = []
    for stride, per_cell in _STRIDES:
        fm = DETECTOR_INPUT // stride
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


@dataclass
class Person:
    """One person in a source image; all coordinates in source-image pixels."""

    box: np.ndarray  # float32 (4,) x0, y0, x1, y1: whole-body extent
    score: float  # detector score in [0, 1]
    keypoints: np.ndarray | None = None  # (18, 2) float32 COCO-18, -1 missing
    scores: np.ndarray | None = None  # (18,) float32
    reason: str | None = None  # None = accepted, else a one-line rejection reason
    hip: np.ndarray | None = None  # float32 (2,) detector's mid-hip point
    size: float = 0.0  # detector's body radius |kp1 - kp0| (pixels)
    crown: np.ndarray | None = None  # float32 (2,) detector's size/rotation point beyond the head
    detector_box: np.ndarray | None = None  # float32 (4,) box from the detector alone
    quality: dict = field(default_factory=dict)  # diagnostics behind the gates
    # float32 (2, 2): the landmark model's own hip centre and size point (roi keypoints), the
    # person's ROI in the next video frame (PersonFinder.follow)
    aux: np.ndarray | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None and self.keypoints is not None

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


@dataclass(frozen=True)
class FinderConfig:
    """Picklable settings of PersonFinder (defaults measured in bench/multiperson.py)."""

    # Detector score above which a candidate is kept (after merging tiles); the keypoint gates
    # reject what the low threshold lets through.
    min_score: float = 0.3
    # Smallest person height (px) the tile pyramid is built to find; smaller tiles cost time.
    smallest_person_px: int = 64
    # Person height as a fraction of the tile side where the detector works best.
    tile_person_fraction: float = 0.35
    # Tile side ratio between pyramid levels.
    tile_growth: float = 1.6
    # Tiles overlap so a person up to this fraction of the tile side fits whole in one tile.
    tile_overlap: float = 0.45
    # Also run each tile mirrored (better recall, twice the detector time).
    flip: bool = False
    # Candidates whose body boxes overlap more than this (IoU) are one person.
    nms_iou: float = 0.4
    # A tile's candidate counts only if its body box is inside the tile (give or take this share
    # of its height) and no taller than max_tile_fraction of the tile side.
    tile_slack: float = 0.1
    max_tile_fraction: float = 0.95
    # Body box from the detector's hip point and size r: top at hip - top*r, bottom at
    # hip + bottom*r, half-width half_width*r.
    top: float = 1.0
    bottom: float = 0.75
    half_width: float = 0.4
    # Gates.
    # BlazePose landmark model's pose-presence score on the detector's ROI (checked before the
    # keypoints are estimated): rejects textures, objects and parts of people.
    min_presence: float = 0.5
    min_person_px: int = 96  # minimum person height (px) to be accepted
    # When the detector's body axis (hip -> size point) leans more than this many degrees from
    # image-up and the presence score on its ROI is under min_presence, the score is taken again
    # on an upright ROI at the same hip and size (0: never). At some tile scales the detector
    # gets the size right but the axis wrong (sideways, even pointing down), and an upright
    # person seen upside down in its ROI scores low.
    upright_retry_tilt: float = 30.0
    # the detector's box (an extrapolation) may be this fraction of min_person_px and still go on
    # to the estimator; the keypoint box is then held to min_person_px
    pre_size_fraction: float = 0.8
    # Segmentation proposals: MediaPipe's selfie segmentation (in the wheel) on square tiles of
    # these sides (half-overlapping; sides larger than the image's shorter side are skipped, and
    # the whole image letterboxed is added when the tiles are smaller than it). A component of the
    # mask (probability > segment_threshold) at least pre_size_fraction * min_person_px tall,
    # segment_min_aspect times taller than wide, not cut by an inner tile edge and (unless
    # allow_cut) not touching the frame becomes a candidate wherever no accepted person is,
    # with the same gates plus an upright-axis one: it finds people the detector misses or
    # places badly (tune scenes, bench/multiperson.py). () turns it off.
    segment_tiles: tuple[int, ...] = (256, 384, 576)
    segment_threshold: float = 0.5
    segment_min_aspect: float = 1.2
    # A candidate too small to estimate counts as a part of a person p (not an occluder) when
    # it lies 70% inside p's box, or more than half inside with its top within this share of
    # p's height of p's top and its bottom above p's lower 20%: p's upper body found again at
    # a smaller tile scale, shifted sideways (0: only the 70% rule).
    part_top_tolerance: float = 0.15
    max_overlap: float = 0.4  # largest share of a person's box covered by another person's
    edge_tolerance: float = 0.05  # share of the keypoint box's height allowed outside the frame
    # share of the detector box's height allowed outside the frame before the keypoints are
    # estimated (the detector's box overshoots; the keypoint box is checked with edge_tolerance)
    pre_edge_tolerance: float = 0.25
    # Keep persons cut by the frame edge (half-body photos, e.g. DeepFashion's): no edge gate,
    # and the person's box is clipped to the frame so the crop shows what the photo holds.
    allow_cut: bool = False
    min_torso_keypoints: int = 3  # of shoulders and hips
    min_inside: float = 0.8  # share of keypoints inside the (widened) detector box
    max_hip_offset: float = 0.5  # hip distance, estimate vs detector, in body radii
    # keypoint-derived body height over the detector box height: allowed range
    height_ratio: tuple[float, float] = (0.6, 1.5)
    # largest disagreement between the estimator's views (torso lengths)
    max_spread: float = 1.0
    # Crop given to the estimator: detector box widened by this share of its height per side.
    estimate_margin: float = 0.15
    estimator_options: dict = field(default_factory=dict)
    # Where keypoints come from: "crop" runs the MediaPipe estimator (its own detector, views and
    # fusion) on a crop around the person; "roi" runs BlazePose's landmark model straight on the
    # ROI the frame detector gave, as is and mirrored, and fuses the two as the estimator does
    # (no second detection per person; its pose flag is also the presence score).
    keypoints: str = "crop"
    # With roi keypoints: 2 runs the landmark model on the ROI as is and mirrored and fuses the
    # two; 1 runs it as is only (half the time, no views-agree check).
    roi_views: int = 2
    num_threads: int = 1

    def tag(self) -> str:
        import hashlib

        return hashlib.sha1(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


class PersonFinder:
    """Detect every person, then estimate keypoints per person on its own crop, then gate.

    Pickling keeps only the configuration; the detector and estimator load lazily in each worker.
    """

    def __init__(self, config: FinderConfig | None = None, **options: Any) -> None:
        self.config = replace(config or FinderConfig(), **options)
        if self.config.keypoints not in ("crop", "roi"):
            raise ValueError(f"keypoints must be 'crop' or 'roi', not {self.config.keypoints!r}")
        if self.config.roi_views not in (1, 2):
            raise ValueError(f"roi_views must be 1 or 2, not {self.config.roi_views!r}")
        self._interp = None
        self._estimator = None
        self._landmark = None
        self._segmenter = None
        self._anchors = detector_anchors()

    # ---- detector ---------------------------------------------------------------------------

    def _load(self, kind: str):
        """An allocated ai-edge-litert interpreter for a model inside the mediapipe wheel."""
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "person detection needs the ai-edge-litert package (pip install ai-edge-litert)"
            ) from e
        from pg2kit.estimators import _quiet_stderr

        with _quiet_stderr():
            it = Interpreter(model_path=_model_path(kind), num_threads=self.config.num_threads)
            it.allocate_tensors()
        return it

    def _detector(self):
        if self._interp is None:
            it = self._load("pose_detection")
            outs = {d["name"]: d["index"] for d in it.get_output_details()}
            self._io = (it.get_input_details()[0]["index"], outs["Identity"], outs["Identity_1"])
            self._interp = it
        return self._interp

    def _landmark_model(self):
        if self._landmark is None:
            it = self._load("pose_landmark_full")
            outs = {d["name"]: d["index"] for d in it.get_output_details()}
            # landmarks (1, 195) = 39 x (x, y, z, visibility, presence) in ROI pixels; pose flag
            # (1, 1); heatmap (1, 64, 64, 39)
            self._landmark = (
                it,
                it.get_input_details()[0]["index"],
                outs["Identity"],
                outs["Identity_1"],
                outs["Identity_3"],
            )
        return self._landmark

    def _roi_transform(self, person: Person, flip: bool = False) -> np.ndarray:
        """2x3 affine map from ROI pixels (256 x 256) to source pixels: a square of side 2.5 body
        radii around the detector's hip, rotated so the body axis points up (MediaPipe's own ROI
        from a detection), mirrored left-right when `flip`."""
        axis = person.crown - person.hip
        angle = math.atan2(float(axis[0]), float(-axis[1]))  # body axis from image-up
        k = 2 * person.size * 1.25 / ROI_SIDE  # source pixels per ROI pixel
        c, s = math.cos(angle) * k, math.sin(angle) * k
        m = np.array([[c, -s, 0.0], [s, c, 0.0]])
        if flip:
            m[:, 0] = -m[:, 0]
        m[:, 2] = person.hip - m[:, :2] @ np.array([ROI_SIDE / 2, ROI_SIDE / 2])
        return m

    def _landmarks_on_roi(
        self, image: np.ndarray, person: Person, flip: bool, landmarks: bool = True
    ) -> tuple[float, np.ndarray | None]:
        """One run of BlazePose's landmark model on the detector's ROI: pose-presence score and
        landmarks (35, 3) = x, y in source pixels (pixel-index convention), visibility in [0, 1],
        refined on the model's heatmap as MediaPipe does (7 x 7 window, confidence >= 0.5); rows
        33 and 34 are the model's hip centre and size point (MediaPipe's next-frame ROI); None
        when `landmarks` is False (the score alone)."""
        import cv2

        it, inp, o_lm, o_flag, o_heat = self._landmark_model()
        m = self._roi_transform(person, flip)
        # ROI pixel centres (i + 0.5) sample source pixel positions m @ (i + 0.5, j + 0.5)
        mc = m.copy()
        mc[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
        roi = cv2.warpAffine(
            image, mc, (ROI_SIDE, ROI_SIDE), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
        )  # fmt: skip
        it.set_tensor(inp, (roi.astype(np.float32) / 255.0)[None])
        it.invoke()
        flag = float(np.clip(it.get_tensor(o_flag)[0, 0], 0.0, 1.0))  # already a probability
        if not landmarks:
            return flag, None
        raw = it.get_tensor(o_lm)[0].reshape(-1, 5)[:35]
        xy = _refine_on_heatmap(raw[:, :2] / ROI_SIDE, it.get_tensor(o_heat)[0]) * ROI_SIDE
        src = xy @ m[:, :2].T + m[:, 2] - 0.5
        lm = np.column_stack([src, _sigmoid(raw[:, 3])]).astype(np.float32)
        return flag, lm

    def _upright(self, person: Person) -> Person | None:
        """`person` with its body axis turned to image-up around the hip, or None when the
        detector's axis leans less than `upright_retry_tilt` (or the retry is off)."""
        limit = self.config.upright_retry_tilt
        if not limit or person.hip is None or person.crown is None or person.size <= 0:
            return None
        dx, dy = (float(v) for v in person.crown - person.hip)
        if math.degrees(math.atan2(abs(dx), -dy)) <= limit:
            return None
        crown = (person.hip + np.array([0.0, -person.size])).astype(np.float32)
        return replace(person, crown=crown)

    def presence(self, image: np.ndarray, person: Person) -> float:
        """BlazePose landmark model's pose-presence score in [0, 1] on the detector's body ROI
        (a square of side 2.5 body radii around the hip, rotated upright, as MediaPipe crops)."""
        if person.hip is None or person.crown is None or person.size <= 0:
            return float("nan")
        return self._landmarks_on_roi(image, person, False, landmarks=False)[0]

    def _run_detector(self, tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A (224, 224, 3) uint8 tile -> raw decoded (2254, 12) in [0, 1] units and scores."""
        it = self._detector()
        inp, o_reg, o_score = self._io
        it.set_tensor(inp, (tile.astype(np.float32) / 127.5 - 1.0)[None])
        with _quiet():
            it.invoke()
        raw = it.get_tensor(o_reg)[0] / DETECTOR_INPUT
        logits = np.clip(it.get_tensor(o_score)[0, :, 0], -80, 80)
        scores = 1.0 / (1.0 + np.exp(-logits))
        raw[:, 0::2] += self._anchors[:, :1]
        raw[:, 1::2] += self._anchors[:, 1:]
        raw[:, 2:4] -= self._anchors  # width and height are not offsets from the anchor
        return raw, scores

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """Square tiles (x0, y0, side) of the pyramid for an image of this size."""
        cfg = self.config
        longest = max(height, width)
        # people from ~0.23 to ~0.45 of a tile's side are found well (bench/multiperson.py)
        side = max(32, int(round(cfg.smallest_person_px / cfg.tile_person_fraction)))
        sides = []
        while side < longest * 0.8:
            sides.append(side)
            side = int(round(side * cfg.tile_growth))
        sides.append(longest)
        out = []
        for s in sides:
            if s >= longest:
                out.append((0, 0, longest))  # letterboxed whole image
                continue
            stride = max(1, int(s * (1 - cfg.tile_overlap)))
            xs = _starts(width, s, stride)
            ys = _starts(height, s, stride)
            out.extend((x, y, s) for y in ys for x in xs)
        return out

    def detect(self, image: np.ndarray) -> list[Person]:
        """Detector only: every person candidate (box, score, hip, size), no keypoints."""
        import cv2

        from pg2kit.estimators import _as_rgb

        image = _as_rgb(image)
        h, w = image.shape[:2]
        cfg = self.config
        cands = []  # rows: score, hip x, hip y, top x, top y
        for x0, y0, s in self.tiles(h, w):
            region = image[y0 : y0 + s, x0 : x0 + s]
            rh, rw = region.shape[:2]
            canvas = np.zeros((s, s, 3), np.uint8)
            # centre the part that lies in the image (the whole-image tile is letterboxed)
            ox, oy = (s - rw) // 2 if s == max(h, w) else 0, (s - rh) // 2 if s == max(h, w) else 0
            canvas[oy : oy + rh, ox : ox + rw] = region
            interp = cv2.INTER_AREA if s > DETECTOR_INPUT else cv2.INTER_LINEAR
            tile = cv2.resize(canvas, (DETECTOR_INPUT, DETECTOR_INPUT), interpolation=interp)
            for flip in (False, True) if cfg.flip else (False,):
                raw, sc = self._run_detector(np.ascontiguousarray(tile[:, ::-1]) if flip else tile)
                keep = sc > cfg.min_score
                if not keep.any():
                    continue
                d = raw[keep]
                if flip:
                    d[:, 0::2] = 1.0 - d[:, 0::2]
                    d[:, 2] = raw[keep, 2]
                pts = d[:, 4:8] * s  # hip (x, y), size point (x, y) in tile pixels
                # keep people whose body lies inside the tile at a size the detector handles
                # (a tile that cuts a person, or zooms on a part of one, yields garbage)
                r = np.linalg.norm(pts[:, 2:4] - pts[:, 0:2], axis=1)
                tall = (cfg.top + cfg.bottom) * r
                inside = (
                    (pts[:, 1] - cfg.top * r >= -cfg.tile_slack * tall + oy)
                    & (pts[:, 1] + cfg.bottom * r <= rh + oy + cfg.tile_slack * tall)
                    & (pts[:, 0] - cfg.half_width * r >= -cfg.tile_slack * tall + ox)
                    & (pts[:, 0] + cfg.half_width * r <= rw + ox + cfg.tile_slack * tall)
                )
                # at the image border the tile edge is the frame edge: the edge gate decides
                at_edge_x = (x0 == 0, x0 + s >= w)
                at_edge_y = (y0 == 0, y0 + s >= h)
                if any(at_edge_x) or any(at_edge_y):
                    inside = inside | _edge_ok(pts, r, cfg, (ox, oy, rw, rh), at_edge_x, at_edge_y)
                fits = (tall <= cfg.max_tile_fraction * s) | (s >= max(h, w))
                sel = inside & fits
                if not sel.any():
                    continue
                pts = pts[sel]
                pts[:, 0::2] += x0 - ox
                pts[:, 1::2] += y0 - oy
                cands.append(np.column_stack([sc[keep][sel], pts]))
        if not cands:
            return []
        c = np.concatenate(cands)
        hips, tops = c[:, 1:3], c[:, 3:5]
        radius = np.linalg.norm(tops - hips, axis=1)
        boxes = np.stack(
            [
                hips[:, 0] - cfg.half_width * radius,
                hips[:, 1] - cfg.top * radius,
                hips[:, 0] + cfg.half_width * radius,
                hips[:, 1] + cfg.bottom * radius,
            ],
            axis=1,
        ).astype(np.float32)
        # drop degenerate candidates (a body point outside the image or a zero size)
        tall = (cfg.top + cfg.bottom) * radius
        ok = (tall >= cfg.smallest_person_px / 2) & (hips[:, 0] > -0.1 * w) & (hips[:, 0] < 1.1 * w)
        order = [i for i in np.argsort(-c[:, 0]) if ok[i]]
        persons: list[Person] = []
        for i in _nms(boxes, hips, radius, order, cfg.nms_iou):
            persons.append(
                Person(
                    box=boxes[i].copy(),
                    score=float(c[i, 0]),
                    hip=hips[i].astype(np.float32),
                    crown=tops[i].astype(np.float32),
                    size=float(radius[i]),
                    detector_box=boxes[i].copy(),
                )
            )
        return persons

    # ---- segmentation proposals -------------------------------------------------------------

    def _segmentation_model(self):
        if self._segmenter is None:
            it = self._load("selfie_segmentation")
            self._segmenter = (
                it,
                it.get_input_details()[0]["index"],
                it.get_output_details()[0]["index"],
            )
        return self._segmenter

    def segment(self, tile: np.ndarray) -> np.ndarray:
        """Person probability (SEGMENT_INPUT, SEGMENT_INPUT) float32 of a square RGB uint8 tile."""
        import cv2

        it, inp, out = self._segmentation_model()
        side = tile.shape[0]
        interp = cv2.INTER_AREA if side > SEGMENT_INPUT else cv2.INTER_LINEAR
        x = cv2.resize(tile, (SEGMENT_INPUT, SEGMENT_INPUT), interpolation=interp)
        it.set_tensor(inp, (x.astype(np.float32) / 255.0)[None])
        it.invoke()
        return it.get_tensor(out)[0, :, :, 0]

    def segment_tiles(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """Square tiles (x0, y0, side) for segmentation proposals; the last may be the whole
        image letterboxed (side = the longer image side)."""
        out = []
        used = 0
        for s in sorted(self.config.segment_tiles):
            if s > min(height, width):
                continue
            stride = max(1, s // 2)
            out.extend(
                (x, y, s) for y in _starts(height, s, stride) for x in _starts(width, s, stride)
            )
            used = s
        longest = max(height, width)
        if self.config.segment_tiles and used < longest:
            out.append((0, 0, longest))
        return out

    def segment_proposals(self, image: np.ndarray) -> list[Person]:
        """Person candidates from segmentation: one per person-shaped mask component, largest
        first, repeats (IoU > 0.6) dropped. Box = the component's box; hip, size point and
        detector box are those of an upright person filling it (as the detector would give)."""
        import cv2

        from pg2kit.estimators import _as_rgb

        image = _as_rgb(image)
        h, w = image.shape[:2]
        cfg = self.config
        min_h = cfg.pre_size_fraction * cfg.min_person_px
        found: list[tuple[np.ndarray, float]] = []
        for x0, y0, s in self.segment_tiles(h, w):
            region = image[y0 : y0 + s, x0 : x0 + s]
            rh, rw = region.shape[:2]
            if rh == s and rw == s:
                tile, ox, oy = np.ascontiguousarray(region), 0, 0
            else:  # the whole image, letterboxed (centred)
                ox, oy = (s - rw) // 2, (s - rh) // 2
                tile = np.zeros((s, s, 3), np.uint8)
                tile[oy : oy + rh, ox : ox + rw] = region
            prob = self.segment(tile)
            scale = s / SEGMENT_INPUT
            mask = (prob > cfg.segment_threshold).astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(mask)
            for i in range(1, n):
                cx, cy, cw, ch = (int(v) for v in stats[i, :4])
                box = np.array(
                    [cx * scale - ox + x0, cy * scale - oy + y0,
                     (cx + cw) * scale - ox + x0, (cy + ch) * scale - oy + y0],
                    np.float32,
                )  # fmt: skip
                bh, bw = box[3] - box[1], box[2] - box[0]
                if bh < min_h or bh < cfg.segment_min_aspect * bw:
                    continue
                # cut by an inner tile edge: the person goes on outside this tile (a larger tile
                # holds it whole); at the image's own border the edge gates decide
                cut = (
                    (cx <= 0 and x0 > 0)
                    or (cy <= 0 and y0 > 0)
                    or (cx + cw >= SEGMENT_INPUT and x0 + s < w)
                    or (cy + ch >= SEGMENT_INPUT and y0 + s < h)
                )
                # touching the frame edge: most likely cut by it, and the mask cannot say how
                # much is missing (the keypoint gates could not either: no part leaves the frame)
                tol = max(1.0, scale)
                at_frame = box[0] <= tol or box[1] <= tol or box[2] >= w - tol or box[3] >= h - tol
                if cut or (at_frame and not cfg.allow_cut):
                    continue
                found.append((box, float(prob[lab == i].mean())))
        kept: list[tuple[np.ndarray, float]] = []
        for box, score in sorted(found, key=lambda bs: -(bs[0][3] - bs[0][1])):
            if all(_iou(box, k) <= 0.6 for k, _ in kept):
                kept.append((box, score))
        out = []
        for box, score in kept:
            r = float(box[3] - box[1]) / (cfg.top + cfg.bottom)
            hip = np.array([(box[0] + box[2]) / 2, box[1] + cfg.top * r], np.float32)
            det = self._body_box(hip, r)
            out.append(
                Person(
                    box=box,
                    score=score,
                    hip=hip,
                    crown=hip - np.array([0, r], np.float32),
                    size=r,
                    detector_box=det,
                    quality={"source": "segmentation"},
                )
            )
        return out

    # ---- keypoints + gates ------------------------------------------------------------------

    def _pose(self):
        if self._estimator is None:
            from pg2kit.estimators import MediaPipeEstimator

            self._estimator = MediaPipeEstimator(**self.config.estimator_options)
        return self._estimator

    def estimate(self, image: np.ndarray, person: Person, others: Sequence[Person] = ()) -> Person:
        """Keypoints of `person` from its own crop (source pixels), then the quality gates."""
        from pg2kit.estimators import _as_rgb

        image = _as_rgb(image)
        cfg = self.config
        h, w = image.shape[:2]
        p = replace(person, quality=dict(person.quality))
        det = p.detector_box if p.detector_box is not None else p.box
        bh = float(det[3] - det[1])
        if bh < cfg.pre_size_fraction * cfg.min_person_px:
            p.reason = f"person too small: {bh:.0f} px < {cfg.min_person_px}"
            return p
        m = cfg.estimate_margin * bh
        x0, y0 = int(max(0, math.floor(det[0] - m))), int(max(0, math.floor(det[1] - m)))
        x1, y1 = int(min(w, math.ceil(det[2] + m))), int(min(h, math.ceil(det[3] + m)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            p.reason = "cut by the frame edge"
            return p

        # The detector's box is extrapolated from the hip and body size and often overshoots a
        # person standing near the frame edge: before estimating only reject a box leaving the
        # frame by more than `pre_edge_tolerance` of its height; the keypoint box decides after.
        def leaves_frame(tolerance: float) -> bool:
            tol = tolerance * bh
            return det[0] < -tol or det[1] < -tol or det[2] > w - 1 + tol or det[3] > h - 1 + tol

        if leaves_frame(cfg.pre_edge_tolerance) and not cfg.allow_cut:
            p.reason = "cut by the frame edge"
            return p
        past = leaves_frame(cfg.edge_tolerance)
        p = self._estimate_in_frame(image, p, det, (x0, y0, x1, y1), others)
        if past and p.reason is not None and not cfg.allow_cut:
            # the detector's box leaves the frame and nothing confirmed a whole person inside
            # it: report the cause the user can act on (a cut person usually fails the
            # presence or keypoint gates too)
            if not p.reason.startswith(("person too small", "occluded")):
                p.reason = "cut by the frame edge"
        return p

    def _estimate_in_frame(self, image, p, det, crop_box, others) -> Person:
        cfg = self.config
        h, w = image.shape[:2]
        x0, y0, x1, y1 = crop_box

        def look(q: Person) -> tuple[float, list | None]:
            """Presence score on q's ROI and, with roi keypoints, the landmark model's views
            (as is and mirrored; the plain view's pose flag is the presence score, its landmarks
            the keypoints: no second detector run per person)."""
            if cfg.keypoints != "roi":
                return self.presence(image, q), None
            flips = (False, True)[: cfg.roi_views]
            views = [self._landmarks_on_roi(image, q, flip) for flip in flips]
            return views[0][0], views

        pres, views = look(p)
        up = self._upright(p) if pres < cfg.min_presence else None
        if up is not None:
            p.quality["presence_tilted"] = pres
            pres_up, views_up = look(up)
            if pres_up > pres:
                pres, views, p.crown = pres_up, views_up, up.crown
        p.quality["presence"] = pres
        if cfg.min_presence > 0:
            if pres < cfg.min_presence:
                p.reason = f"not a person: pose presence {pres:.2f} < {cfg.min_presence}"
                return p
        est = self._pose()
        if cfg.keypoints == "roi":
            from pg2kit.estimators import finish_pose, run_to_coco18
            from pg2kit.keypoints import empty_keypoints

            # a view counts when its own pose flag says a person is there (MediaPipe's gate)
            runs = [
                run_to_coco18(lm[:33], flip) for flip, (flag, lm) in enumerate(views) if flag >= 0.5
            ]
            if views[0][0] >= 0.5:
                p.aux = views[0][1][33:35, :2].copy()
            kp, sc = finish_pose(runs, est.config, w, h) if runs else empty_keypoints()
        else:
            crop = np.ascontiguousarray(image[y0:y1, x0:x1])
            runs = est.run_views(crop)
            kp, sc = est.finish(runs, x1 - x0, y1 - y0)
        p.quality.update(_run_agreement(runs), runs=len(runs))
        ok = kp[:, 0] >= 0
        kp = kp.copy()
        if cfg.keypoints != "roi":
            kp[ok] += (x0, y0)
        p.keypoints, p.scores = kp.astype(np.float32), sc.astype(np.float32)
        p.reason = self._gate(p, ok, (h, w), others)
        if p.reason is not None and p.reason.startswith(("keypoints disagree", "no keypoints")):
            # keypoints that disagree with the detector say nothing about where the person is:
            # the box (what the video tracker follows) stays the detector's
            p.box = det.copy()
        return p

    def _gate(
        self, p: Person, ok: np.ndarray, hw: tuple[int, int], others: Sequence[Person]
    ) -> str | None:
        cfg = self.config
        h, w = hw
        kp = p.keypoints
        if not ok.any():
            return "no keypoints found on the person"
        torso = sum(bool(ok[i]) for i in TORSO_KEYPOINTS)
        if torso < cfg.min_torso_keypoints:
            return f"keypoints disagree with the detector box: {torso} of 4 torso points"
        det = p.detector_box if p.detector_box is not None else p.box
        bw, bh = det[2] - det[0], det[3] - det[1]
        wide = (det[0] - 0.25 * bw, det[1] - 0.1 * bh, det[2] + 0.25 * bw, det[3] + 0.1 * bh)
        pts = kp[ok]
        inside = (
            (pts[:, 0] >= wide[0])
            & (pts[:, 0] <= wide[2])
            & (pts[:, 1] >= wide[1])
            & (pts[:, 1] <= wide[3])
        ).mean()
        if inside < cfg.min_inside:
            return f"keypoints disagree with the detector box: {inside:.0%} inside"
        from pg2kit.estimators import torso_length

        q = p.quality
        q["torso_ratio"] = (
            torso_length(kp) / p.size if ok[[2, 5, 8, 11]].all() and p.size else float("nan")
        )
        q["keypoints"] = int(ok.sum())
        hips = [kp[i] for i in (8, 11) if ok[i]]
        if hips and p.hip is not None and p.size > 0:
            off = float(np.linalg.norm(np.mean(hips, axis=0) - p.hip)) / p.size
            if off > cfg.max_hip_offset:
                return f"keypoints disagree with the detector box: hips {off:.2f} body sizes away"
        from pg2kit.datasets.folder import person_box

        kbox = np.asarray(person_box(kp, ok, (h, w)), np.float32)
        # whole-body extent: the keypoint box, but where it ends at a missing part (no ankles,
        # no head) the detector's box says where the body ends
        if not (ok[10] or ok[13]):
            kbox[3] = max(kbox[3], det[3])
        if not ok[[0, 14, 15, 16, 17]].any():
            kbox[1] = min(kbox[1], det[1])
        p.box = kbox
        height = float(kbox[3] - kbox[1])
        q["height_ratio"] = ratio = height / max(1e-3, float(det[3] - det[1]))
        q["box_iou"] = _iou(kbox, det)
        lo, hi = cfg.height_ratio
        if not lo <= ratio <= hi:
            return (
                "keypoints disagree with the detector box: keypoint body "
                f"{ratio:.2f} x the detector's height"
            )
        if q.get("spread", 0.0) > cfg.max_spread:
            return f"keypoints disagree between views: spread {q['spread']:.2f} torso lengths"
        if height < cfg.min_person_px:
            return f"person too small: {height:.0f} px < {cfg.min_person_px}"
        tol = cfg.edge_tolerance * height
        if kbox[0] < -tol or kbox[1] < -tol or kbox[2] > w - 1 + tol or kbox[3] > h - 1 + tol:
            if not cfg.allow_cut:
                return "cut by the frame edge"
            q["cut"] = True
            kbox = np.clip(kbox, 0, [w, h, w, h]).astype(np.float32)
            p.box = kbox
        worst = 0.0
        for o in others:
            if o is p:
                continue
            ob = o.detector_box if o.detector_box is not None else o.box
            worst = max(worst, _covered(kbox, ob))
        if worst > cfg.max_overlap:
            return f"occluded: {worst:.0%} overlap with another person"
        return None

    def __call__(self, image: np.ndarray) -> list[Person]:
        """Find, estimate every person and gate; rejected persons are included with a reason."""
        return [p for p in self.find(image) if not (p.reason or "").startswith(DUPLICATE)]

    def find(self, image: np.ndarray) -> list[Person]:
        """Every person candidate of an image with keypoints and gates (as `estimate_all`):
        the detector's, then segmentation proposals that do not repeat an accepted person."""
        from pg2kit.estimators import _as_rgb

        image = _as_rgb(image)
        done = [self.estimate(image, p, ()) for p in self.detect(image)]
        if self.config.segment_tiles:
            found = [p for p in done if p.reason is None]
            iou = self.config.nms_iou
            for q in self.segment_proposals(image):
                # not where an accepted person is: the same person, or a part of one (its legs
                # or head can be a mask component of their own)
                if all(
                    _iou(q.box, p.box) < iou
                    and _iou(q.box, p.detector_box) < iou
                    and _covered(q.box, p.box) <= 0.5
                    for p in found
                ):
                    done.append(self.estimate(image, q, ()))
            _check_segmented(done)
        return self._resolve(done)

    def estimate_all(self, image: np.ndarray, persons: Sequence[Person]) -> list[Person]:
        """Keypoints and gates for every detected person, same order and length as `persons`.

        Each person's own gates first, occlusion after: only credible persons (keypoints agree
        with their box, or too small to estimate) can occlude another. A person whose keypoint
        box repeats a better one's gets a reason starting with `DUPLICATE` (drop those rows).
        """
        from pg2kit.estimators import _as_rgb

        image = _as_rgb(image)
        return self._resolve([self.estimate(image, p, ()) for p in persons])

    def _resolve(self, done: list[Person]) -> list[Person]:
        """Duplicates, then occlusion among persons whose own gates have run."""
        _mark_duplicates(done, self.config.nms_iou)
        credible = [p for p in done if p.reason is None or p.reason.startswith("person too small")]
        top = self.config.part_top_tolerance
        for p in done:
            if p.reason is None:
                worst = max(
                    (
                        _covered(p.box, o.box)
                        for o in credible
                        if o is not p and not _part(o, p, top)
                    ),
                    default=0.0,
                )
                if worst > self.config.max_overlap:
                    p.reason = f"occluded: {worst:.0%} overlap with another person"
                    continue
                # another person standing inside this one's box (in front of it, or joined to
                # it by a segmentation mask): the crop holds both, keypoints may span both; a
                # much smaller candidate inside is likelier a part of p (as in `_part`)
                for o in credible:
                    inside = o is not p and _covered(o.box, p.box) > 0.5 and not _part(o, p, top)
                    if inside and 0.3 * p.height <= o.height < p.height:
                        p.reason = (
                            f"occluded: the person at {_box_str(o.box)} stands inside its box"
                        )
                        break
        return done

    def follow(self, person: Person) -> Person | None:
        """Where `person` should be looked for in the next video frame, as a detection (box,
        hip, size point) for `estimate_all`, or None when it is not worth following (no person
        there, keypoints that say nothing about where it is, or a person occluded by another,
        whose ROI holds both and can slide onto the other one). With roi keypoints the ROI is
        the landmark model's own (MediaPipe's tracking); otherwise the detector's geometry is
        moved to the estimated hips."""
        reason = person.reason or ""
        lost = (DUPLICATE, "not a person", "no keypoints", "keypoints disagree", "occluded")
        if reason.startswith(lost):
            return None
        if person.hip is None or person.crown is None:
            return None
        if person.aux is not None:
            hip, crown = person.aux[0], person.aux[1]
        else:
            kp = person.keypoints
            if kp is None or kp[8, 0] < 0 or kp[11, 0] < 0:
                return None
            hip = (kp[8] + kp[11]) / 2
            crown = hip + (person.crown - person.hip)
        r = float(np.linalg.norm(crown - hip))
        if not np.isfinite(r) or r < 1:
            return None
        box = self._body_box(hip, r)
        return Person(box=box, score=person.score, hip=np.asarray(hip, np.float32),
                      crown=np.asarray(crown, np.float32), size=r, detector_box=box.copy())  # fmt: skip

    def _body_box(self, hip: np.ndarray, r: float) -> np.ndarray:
        """The detector's body box of an upright person with this hip and body radius."""
        cfg = self.config
        return np.array([hip[0] - cfg.half_width * r, hip[1] - cfg.top * r,
                         hip[0] + cfg.half_width * r, hip[1] + cfg.bottom * r], np.float32)  # fmt: skip

    def close(self) -> None:
        if self._estimator is not None:
            self._estimator.close()
        self._estimator = None
        self._interp = None
        self._landmark = None
        self._segmenter = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def __repr__(self) -> str:
        return f"PersonFinder({self.config!r})"


class _quiet:
    """No-op context (kept separate so the interpreter call site stays cheap)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _edge_ok(pts, r, cfg, region, at_edge_x, at_edge_y) -> np.ndarray:
    """Candidates inside the tile except where the tile side is the image's own border."""
    ox, oy, rw, rh = region
    tall = (cfg.top + cfg.bottom) * r
    slack = cfg.tile_slack * tall
    left = at_edge_x[0] | (pts[:, 0] - cfg.half_width * r >= ox - slack)
    right = at_edge_x[1] | (pts[:, 0] + cfg.half_width * r <= ox + rw + slack)
    top = at_edge_y[0] | (pts[:, 1] - cfg.top * r >= oy - slack)
    bottom = at_edge_y[1] | (pts[:, 1] + cfg.bottom * r <= oy + rh + slack)
    return left & right & top & bottom


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))


def _refine_on_heatmap(xy: np.ndarray, heatmap: np.ndarray, kernel: int = 7) -> np.ndarray:
    """MediaPipe's heatmap refinement of normalised landmarks `xy` (K, 2) on raw heatmap logits
    (H, W, >= K): a landmark moves to the confidence-weighted mean cell of the kernel x kernel
    window at its cell when the window's highest confidence is >= 0.5 (cell index / size, as
    MediaPipe computes it)."""
    hh, hw = heatmap.shape[:2]
    out = xy.copy()
    r = (kernel - 1) // 2
    for k in range(len(xy)):
        col, row = int(xy[k, 0] * hw), int(xy[k, 1] * hh)
        if not (0 <= col < hw and 0 <= row < hh):
            continue
        r0, r1 = max(0, row - r), min(hh, row + r + 1)
        c0, c1 = max(0, col - r), min(hw, col + r + 1)
        conf = _sigmoid(heatmap[r0:r1, c0:c1, k].astype(np.float64))
        total = conf.sum()
        if total > 0 and conf.max() >= 0.5:
            rows, cols = np.mgrid[r0:r1, c0:c1]
            out[k] = ((cols * conf).sum() / total / hw, (rows * conf).sum() / total / hh)
    return out


def _starts(length: int, side: int, stride: int) -> list[int]:
    if length <= side:
        return [0]
    n = math.ceil((length - side) / stride) + 1
    return [int(round(i * (length - side) / (n - 1))) for i in range(n)]


def _run_agreement(runs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """How well the estimator's views agree: largest distance between two runs' torso and head
    points, in torso lengths (a real person gives near-identical runs, a texture does not)."""
    from pg2kit.estimators import torso_length

    if len(runs) < 2:
        return {"spread": 0.0 if runs else float("nan")}
    core = [0, 2, 5, 8, 11]
    xys = np.stack([r[0] for r in runs])[:, core]
    scale = max(1e-3, float(np.median([torso_length(r[0]) for r in runs])))
    d = np.linalg.norm(xys[:, None] - xys[None], axis=-1).mean(-1)
    return {"spread": float(d.max() / scale)}


def _mark_duplicates(persons: list[Person], iou: float) -> None:
    """Mark a person whose box repeats a better one's (the same person found twice); a small
    candidate lying mostly inside an accepted person is a part of that person."""
    rank = sorted(
        range(len(persons)), key=lambda i: (persons[i].reason is not None, -persons[i].score)
    )
    kept: list[int] = []
    for i in rank:
        p = persons[i]
        for j in kept:
            q = persons[j]
            # a small candidate mostly inside a much taller person is a part of that person
            part = (
                p.reason is not None
                and (q.reason is None or q.keypoints is not None)
                and _covered(p.box, q.box) > 0.7
                and q.height > 1.5 * p.height
            )
            if _iou(p.box, q.box) > iou or part:
                p.reason = f"{DUPLICATE} the same person as the one at {_box_str(q.box)}"
                break
        else:
            kept.append(i)


def _check_segmented(persons: list[Person], max_tilt: float = 60.0) -> None:
    """A gate of segmentation persons only (their box assumes an upright person): the estimated
    body axis (mid-hip to neck) must point up within `max_tilt` degrees (an upside-down skeleton
    spans the bodies of two people, the mask having joined them)."""
    for q in persons:
        if q.reason is not None or q.quality.get("source") != "segmentation":
            continue
        kp = q.keypoints
        if kp is not None and (kp[[1, 8, 11], 0] >= 0).all():
            axis = kp[1] - (kp[8] + kp[11]) / 2
            tilt = float(np.degrees(np.arctan2(abs(axis[0]), -axis[1])))
            q.quality["tilt"] = tilt
            if tilt > max_tilt:
                q.reason = (
                    f"keypoints disagree with the segmentation: body axis {tilt:.0f} degrees "
                    "from upright"
                )


def _part(o: Person, p: Person, top: float) -> bool:
    """A candidate too small to estimate that is a part of person p found at a smaller tile
    scale (its box is the detector's extrapolation), not an occluder: it lies mostly (70%)
    inside p's box, or (with `top` > 0: FinderConfig.part_top_tolerance) more than half inside
    with its top within `top` x p's height of p's top and its bottom above p's lower fifth
    (p's upper body, shifted sideways)."""
    if not (o.reason or "").startswith("person too small"):
        return False
    cov = _covered(o.box, p.box)
    if cov > 0.7:
        return True
    return bool(
        top
        and cov > 0.5
        and abs(o.box[1] - p.box[1]) <= top * p.height
        and o.box[3] < p.box[3] - 0.2 * p.height
    )


def _box_str(box: np.ndarray) -> str:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return f"({x0},{y0})-({x1},{y1})"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _covered(a: np.ndarray, b: np.ndarray) -> float:
    """Share of box a's area that box b covers."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return float(ix * iy / area) if area > 0 else 0.0


def _nms(
    boxes: np.ndarray, hips: np.ndarray, radius: np.ndarray, order: list[int], iou: float
) -> list[int]:
    """Greedy NMS: a candidate is a repeat if its box overlaps a kept one by more than `iou`,
    or one box lies 80% inside the other, or its hip lies within 0.3 body radii of a kept one's
    at a similar size (tiles disagree on the box more than on the hip)."""
    kept: list[int] = []
    for i in order:
        same = False
        for j in kept:
            ratio = radius[i] / radius[j]
            near = np.linalg.norm(hips[i] - hips[j]) < 0.3 * max(radius[i], radius[j])
            # one box mostly inside the other: the same person at two tile scales
            nested = max(_covered(boxes[i], boxes[j]), _covered(boxes[j], boxes[i])) > 0.8
            if _iou(boxes[i], boxes[j]) > iou or nested or (near and 0.6 < ratio < 1.6):
                same = True
                break
        if not same:
            kept.append(i)
    return kept


def choose_identity_person(persons: Sequence[Person], image_shape: Sequence[int]) -> int | None:
    """Index of the identity person of a photo among the accepted ones, or None if none is.

    Rule: the largest prominence = box height / image height x (1 - d / 2), where d is the
    distance of the box centre from the image centre divided by half the image diagonal. A
    person twice as tall wins unless it sits at the very corner; at equal size the more central
    one wins.
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    half_diag = math.hypot(w, h) / 2
    best, best_value = None, -1.0
    for i, p in enumerate(persons):
        if p.reason is not None or p.keypoints is None:
            continue
        b = p.box
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        d = min(1.0, math.hypot(cx - w / 2, cy - h / 2) / half_diag)
        value = float(b[3] - b[1]) / h * (1 - d / 2)
        if value > best_value:
            best, best_value = i, value
    return best


PADS = ("constant", "edge", "reflect")
# Default crop padding past the image edge (docs/estimator.md: 'edge' smears streaks, 'reflect'
# mirrors body parts into ghost limbs; a flat fill adds nothing that looks like a person).
DEFAULT_PAD = "constant"


def crop_geometry(
    box: Sequence[float], size: tuple[int, int], margin: float = 0.05
) -> tuple[int, int, int, int]:
    """Source-pixel rectangle (x0, y0, width, height) that `crop_person` resizes to `size` (H, W)
    for `box`: the box grown by `margin` x its height per side, its short side grown (centred) to
    the output aspect. A crop pixel u maps to source (u + 0.5) * width / W - 0.5 + x0."""
    out_h, out_w = int(size[0]), int(size[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got {tuple(box)}")
    m = margin * (y1 - y0)
    return aspect_rect(x0 - m, y0 - m, x1 + m, y1 + m, (out_h, out_w))


def aspect_rect(
    x0: float, y0: float, x1: float, y1: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Integer rectangle (x0, y0, width, height) around the box with the aspect of `size` (H, W):
    the short side grown, centred. Its aspect differs from the output's by under half a pixel;
    keypoints use the exact per-axis scales of the final resize."""
    out_h, out_w = int(size[0]), int(size[1])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    if bw / bh < out_w / out_h:
        bw = bh * out_w / out_h
    else:
        bh = bw * out_h / out_w
    ch = max(1, math.ceil(bh))
    cw = max(1, round(ch * out_w / out_h))
    return round(cx - cw / 2), round(cy - ch / 2), cw, ch


def crop_person(
    image: np.ndarray,
    box: Sequence[float],
    size: tuple[int, int],
    pad: str = DEFAULT_PAD,
    margin: float = 0.05,
    pad_value: tuple[int, int, int] = (0, 0, 0),
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Crop `image` around `box` (x0, y0, x1, y1) to `size` (H, W), keeping the aspect.

    The box grows by `margin` x its height on every side, then its short side grows (centred) to
    the output aspect; where the crop leaves the image it is filled per `pad` ('constant' with
    `pad_value`, 'edge' replicate, 'reflect' mirrored). Returns the crop and a function mapping
    source-pixel keypoints (N, 2) into the crop (missing stay -1; points outside become -1).
    """
    import cv2

    if pad not in PADS:
        raise ValueError(f"pad must be one of {', '.join(PADS)}, not {pad!r}")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {size}")
    image = np.asarray(image)
    ph, pw = image.shape[:2]
    ix0, iy0, cw, ch = crop_geometry(box, (out_h, out_w), margin)
    top, left = max(0, -iy0), max(0, -ix0)
    bottom, right = max(0, iy0 + ch - ph), max(0, ix0 + cw - pw)
    region = image[max(0, iy0) : min(ph, iy0 + ch), max(0, ix0) : min(pw, ix0 + cw)]
    if region.size == 0:
        region = np.zeros((1, 1) + image.shape[2:], image.dtype)
        top, left, bottom, right = 0, 0, ch - 1, cw - 1
        pad = "constant"
    if top or left or bottom or right:
        if pad == "constant":
            value = tuple(int(v) for v in pad_value)
            region = cv2.copyMakeBorder(
                region, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value
            )
        elif pad == "edge":
            region = cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
        else:
            region = _reflect(region, top, bottom, left, right)
    interp = cv2.INTER_AREA if out_h * out_w < ch * cw else cv2.INTER_CUBIC
    crop = cv2.resize(region, (out_w, out_h), interpolation=interp)
    sx, sy = out_w / cw, out_h / ch

    def to_crop(points: np.ndarray, scores: np.ndarray | None = None):
        """Source-pixel points (N, 2) -> crop pixels; with `scores` (N,) also the scores
        (0 where a point is missing), as a pair."""
        pts = np.array(points, np.float32, copy=True).reshape(-1, 2)
        missing = (pts[:, 0] == -1) & (pts[:, 1] == -1)
        out = np.empty_like(pts)
        # pixel centres: cv2.resize maps output u to input (u + 0.5) / s - 0.5
        out[:, 0] = (pts[:, 0] - ix0 + 0.5) * sx - 0.5
        out[:, 1] = (pts[:, 1] - iy0 + 0.5) * sy - 0.5
        outside = (
            (out[:, 0] < -0.5)
            | (out[:, 0] >= out_w - 0.5)
            | (out[:, 1] < -0.5)
            | (out[:, 1] >= out_h - 0.5)
        )
        out[missing | outside] = -1.0
        keep = ~(missing | outside)
        out[keep, 0] = np.clip(out[keep, 0], 0, out_w - 1)
        out[keep, 1] = np.clip(out[keep, 1], 0, out_h - 1)
        if scores is None:
            return out
        sc = np.array(scores, np.float32, copy=True).reshape(-1)
        sc[~keep] = 0.0
        return out, sc

    return np.ascontiguousarray(crop), to_crop


def _reflect(region: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """Mirror padding that works even when the pad is wider than the region (tiles mirrors)."""
    pads = ((top, bottom), (left, right)) + ((0, 0),) * (region.ndim - 2)
    mode = "reflect" if min(region.shape[:2]) > 1 else "edge"
    return np.pad(region, pads, mode=mode)


__all__ = [
    "DEFAULT_PAD",
    "DUPLICATE",
    "NUM_KEYPOINTS",
    "PADS",
    "FinderConfig",
    "Person",
    "PersonFinder",
    "choose_identity_person",
    "aspect_rect",
    "crop_geometry",
    "crop_person",
    "detector_anchors",
]
