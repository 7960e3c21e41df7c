"""Multi-object tracking of person boxes across video frames (ByteTrack-style, IoU only).

Each track predicts its box with a constant-velocity model; detections are matched to tracks by
IoU in two rounds (confident detections first, then the weak ones keep existing tracks alive),
with the Hungarian assignment. Pure numpy + scipy; works with irregular frame steps (--every N).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between boxes a (N, 4) and b (M, 4), x0 y0 x1 y1 -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


@dataclass
class _Track:
    id: int
    box: np.ndarray  # last matched box (4,)
    frame: int  # frame of the last match
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per frame
    hits: int = 1

    def predict(self, frame: int, horizon: int = 5) -> np.ndarray:
        # extrapolate at most `horizon` frames: over a long gap a noisy velocity drifts away
        return self.box + self.velocity * min(frame - self.frame, horizon)

    def update(self, box: np.ndarray, frame: int, smoothing: float) -> None:
        gap = max(1, frame - self.frame)
        v = (box - self.box) / gap
        self.velocity = v if self.hits == 1 else smoothing * self.velocity + (1 - smoothing) * v
        self.box = box
        self.frame = frame
        self.hits += 1


class Tracker:
    """Online tracker: `update(frame_index, boxes, scores, starts)` -> track id per box (-1
    unassigned).

    starts: which boxes may start a track; they are matched first, the others only extend
    existing tracks. By default the boxes scoring at least high_score (ByteTrack's rule);
    `prepare video` passes the persons that passed every gate, whatever their detector score.
    match_iou: least IoU between a predicted track box and a detection. max_gap: frames a track
    survives unmatched (in frame-index units, so `--every N` is fine).
    """

    def __init__(
        self,
        high_score: float = 0.5,
        match_iou: float = 0.2,
        max_gap: int = 30,
        smoothing: float = 0.6,
    ) -> None:
        self.high_score = high_score
        self.match_iou = match_iou
        self.max_gap = max_gap
        self.smoothing = smoothing
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_frame: int | None = None

    def update(
        self,
        frame_index: int,
        boxes: np.ndarray,
        scores: np.ndarray | None = None,
        starts: np.ndarray | None = None,
    ) -> np.ndarray:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(boxes)
        scores = np.ones(n) if scores is None else np.asarray(scores, np.float64).reshape(-1)
        if len(scores) != n:
            raise ValueError(f"{n} boxes but {len(scores)} scores")
        starts = scores >= self.high_score if starts is None else np.asarray(starts, bool)
        if starts.shape != (n,):
            raise ValueError(f"{n} boxes but {starts.size} starts")
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frame indices must increase: {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        self._tracks = [t for t in self._tracks if frame_index - t.frame <= self.max_gap]
        ids = np.full(n, -1, np.int64)
        free_tracks = list(range(len(self._tracks)))
        high = [i for i in range(n) if starts[i]]
        low = [i for i in range(n) if not starts[i]]
        for group in (high, low):
            if not group or not free_tracks:
                continue
            pred = np.stack([self._tracks[t].predict(frame_index) for t in free_tracks])
            iou = _similarity(pred, boxes[group])
            matched = _assign(iou, self.match_iou)
            used = set()
            for r, c in matched:
                t = self._tracks[free_tracks[r]]
                t.update(boxes[group[c]], frame_index, self.smoothing)
                ids[group[c]] = t.id
                used.add(r)
            free_tracks = [t for k, t in enumerate(free_tracks) if k not in used]
        for i in high:
            if ids[i] < 0:
                self._tracks.append(_Track(self._next_id, boxes[i].copy(), frame_index))
                ids[i] = self._next_id
                self._next_id += 1
        return ids

    def finish(self) -> None:
        """End of the video: drop every live track (ids are never reused)."""
        self._tracks = []
        self._last_frame = None


def _similarity(pred: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU, or where boxes of one person disagree in size between frames (the detector's tiles
    scale boxes differently), half a centre-closeness score: 1 at the same centre, 0 at 0.5 box
    heights apart, only for boxes whose heights differ by less than 1.5x."""
    iou = iou_matrix(pred, boxes)
    pc = (pred[:, None, :2] + pred[:, None, 2:]) / 2
    bc = (boxes[None, :, :2] + boxes[None, :, 2:]) / 2
    ph = np.maximum(pred[:, None, 3] - pred[:, None, 1], 1e-6)
    bh = np.maximum(boxes[None, :, 3] - boxes[None, :, 1], 1e-6)
    close = np.clip(1 - np.linalg.norm(pc - bc, axis=-1) / (0.5 * ph), 0, 1)
    similar = np.maximum(ph, bh) / np.minimum(ph, bh) < 1.5
    return np.maximum(iou, 0.5 * close * similar)


def _assign(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """Hungarian matching maximising IoU; pairs below `min_iou` are dropped."""
    from scipy.optimize import linear_sum_assignment

    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= min_iou]


def track(
    detections: Iterable[tuple] | Sequence,
    **options: float,
) -> list[np.ndarray]:
    """Offline: [(frame_index, boxes (N, 4), scores (N,)[, starts (N,)]), ...] in frame order
    -> ids per frame."""
    tracker = Tracker(**options)
    out = [tracker.update(*d) for d in detections]
    tracker.finish()
    return out
