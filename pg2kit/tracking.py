"""Multi-object tracking of person boxes across video frames (ByteTrack-style, IoU only), and
an offline appearance pass over the finished tracks.

Each track predicts its box with a constant-velocity model; detections are matched to tracks by
IoU in two rounds (confident detections first, then the weak ones keep existing tracks alive),
with the Hungarian assignment. Pure numpy + scipy; works with irregular frame steps (--every N).

Boxes alone swap people where walkers cross or one is lost and found again. Once a video's
tracks are known, `split_by_appearance` cuts a track where the person's colours change for good
(and drops a lone sample that looks like someone else), and `join_tracks` links a track that
ends to one that starts later, close by and with the same colours. The appearance is a colour
histogram of the body (`appearance`), upper and lower body apart.
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


# ---------------------------------------------------------------- appearance

APPEARANCE_BINS = (4, 6, 6)  # L, a, b bins of the CIELAB histograms


def appearance(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Colour descriptor of the person in a crop: (2, 144) float32, CIELAB histograms (4 x 6 x 6
    bins, summing to 1) of the PG² body mask's pixels above and below the hips, so that a shirt
    and trousers count apart. image: RGB uint8 (H, W, 3); keypoints (18, 2) x, y in its pixels.
    A part with under 10 pixels gets a flat histogram."""
    import cv2

    from pg2kit.keypoints import present
    from pg2kit.maps import body_mask

    h, w = image.shape[:2]
    mask = body_mask(keypoints, h, w).astype(bool)
    hips = [i for i in (8, 11) if present(keypoints)[i]]
    cut = float(np.mean(keypoints[hips, 1])) if hips else h / 2
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
    rows = np.arange(h)[:, None]
    n = int(np.prod(APPEARANCE_BINS))
    out = np.full((2, n), 1.0 / n, np.float32)
    for k, part in enumerate((mask & (rows < cut), mask & (rows >= cut))):
        px = lab[part].astype(np.int64)
        if len(px) < 10:
            continue
        idx = 0
        for c, bins in enumerate(APPEARANCE_BINS):
            idx = idx * bins + np.minimum(px[:, c] * bins // 256, bins - 1)
        hist = np.bincount(idx, minlength=n).astype(np.float32)
        out[k] = hist / hist.sum()
    return out


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance between two `appearance` descriptors, averaged over the two parts:
    0 for the same colours, 1 for colours that do not overlap at all."""
    bc = np.sqrt(np.asarray(a, np.float64) * np.asarray(b, np.float64)).sum(axis=-1)
    return float(np.mean(np.sqrt(np.clip(1.0 - bc, 0.0, None))))


def split_by_appearance(
    descriptors: Sequence[np.ndarray], threshold: float, window: int = 5
) -> list[int]:
    """Cut one track (descriptors in frame order) where its person's colours change.

    Each sample is compared with the last `window` samples of its part (the smallest distance
    counts). A sample farther than `threshold` starts a new part when the next sample is too
    (the track has moved to someone else) or when it is the last one; when the next sample looks
    like the part again, the odd one is dropped (a frame where the keypoints landed on someone
    crossing). Returns the part number of each sample (0, 1, ...) or -1 for a dropped one.
    """
    n = len(descriptors)
    labels = [-1] * n
    if n == 0:
        return labels
    labels[0] = 0
    part = [0]  # indices of the current part's samples

    def far(i: int) -> bool:
        ref = part[-window:]
        return min(appearance_distance(descriptors[i], descriptors[j]) for j in ref) > threshold

    for i in range(1, n):
        if not far(i):
            labels[i] = labels[part[-1]]
            part.append(i)
        elif i + 1 == n or far(i + 1):
            labels[i] = labels[part[-1]] + 1
            part = [i]
        # else: a lone odd sample, dropped (label -1)
    return labels


@dataclass
class TrackPiece:
    """What `join_tracks` needs of one track: frames (sorted), boxes (N, 4) and descriptors."""

    frames: Sequence[int]
    boxes: np.ndarray
    descriptors: Sequence[np.ndarray]


def join_tracks(
    pieces: Sequence[TrackPiece],
    threshold: float,
    max_gap: int = 60,
    speed: float = 0.25,
    window: int = 5,
) -> list[list[int]]:
    """Link tracks that show one person: a track that ends before another starts, at most
    `max_gap` frames earlier, within `speed` body heights per frame (plus half a height) of where
    the later one starts, and with the same colours (median distance between the last `window`
    descriptors of the one and the first `window` of the other at most `threshold`). Links are
    taken closest first; a track has at most one successor and one predecessor. Returns the
    chains of piece indices, in time order, each chain ordered by its first frame."""
    n = len(pieces)
    links = []
    for i, a in enumerate(pieces):
        for j, b in enumerate(pieces):
            if i == j or not len(a.frames) or not len(b.frames):
                continue
            gap = int(b.frames[0]) - int(a.frames[-1])
            if gap <= 0 or gap > max_gap:
                continue
            ba, bb = np.asarray(a.boxes[-1], float), np.asarray(b.boxes[0], float)
            height = max(ba[3] - ba[1], bb[3] - bb[1], 1.0)
            moved = np.linalg.norm((ba[:2] + ba[2:]) / 2 - (bb[:2] + bb[2:]) / 2)
            if moved > speed * height * gap + 0.5 * height:
                continue
            d = float(np.median([appearance_distance(x, y) for x in a.descriptors[-window:]
                                 for y in b.descriptors[:window]]))  # fmt: skip
            if d <= threshold:
                links.append((d, i, j))
    succ: dict[int, int] = {}
    pred: dict[int, int] = {}
    for _, i, j in sorted(links):
        if i not in succ and j not in pred:
            succ[i], pred[j] = j, i
    chains = []
    for i in range(n):
        if i in pred:
            continue
        chain = [i]
        while chain[-1] in succ:
            chain.append(succ[chain[-1]])
        chains.append(chain)
    return sorted(chains, key=lambda c: (int(pieces[c[0]].frames[0]) if len(pieces[c[0]].frames)
                                         else 0, c[0]))  # fmt: skip
