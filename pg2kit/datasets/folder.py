"""Own-photo adapter: reads SRC/<identity>/* photos of any size and crops each around the person
whose keypoints the estimator found, into a fixed (H, W) frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pg2kit.datasets.base import (
    AdapterError,
    NoPersonError,
    Record,
    ScanResult,
    clip_keypoints,
    list_images,
    printable_text,
    rel_posix,
    require_dir,
    resize_exact,
)
from pg2kit.imageio import load_rgb
from pg2kit.persons import aspect_rect

PAD_MODES = ("constant", "edge", "reflect")
HEAD = (0, 14, 15, 16, 17)  # nose, eyes, ears
ANKLES = (10, 13)
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")  # ':' and ',' would break the CSV exports

# Crop geometry, in units of the person's estimated torso length (neck to mid-hip); an adult's
# torso is ~0.3 of standing height, the head ~0.45 torso tall with the eyes half-way down.
CROWN_ABOVE_HEAD_POINTS = 0.35  # crown above the highest of nose/eyes/ears
HEAD_ABOVE_NECK = 0.75  # crown above neck/shoulders when no head keypoint was found
SOLES_BELOW_ANKLES = 0.2
SIDE_MARGIN = 0.3  # arms, hands and clothes reach beyond the outermost joints
VERTICAL_MARGIN = 0.1


def safe_name(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9._-] replaced by '_'."""
    return _UNSAFE_CHARS.sub("_", text)


def _dist(kp: np.ndarray, ok: np.ndarray, a: int, b: int) -> float | None:
    return float(np.linalg.norm(kp[a] - kp[b])) if ok[a] and ok[b] else None


def person_unit(keypoints: np.ndarray, ok: np.ndarray) -> float | None:
    """Estimated torso length (px) from whatever body segments are present; None if none are.

    Each segment is turned into a torso-length estimate with typical body proportions; the
    largest estimate wins because foreshortening only ever makes segments look shorter.
    """
    kp = keypoints
    neck = kp[1] if ok[1] else (kp[2] + kp[5]) / 2 if ok[2] and ok[5] else None
    hips = [kp[i] for i in (8, 11) if ok[i]]
    estimates: list[float] = []
    if neck is not None and hips:
        estimates.append(float(np.linalg.norm(neck - np.mean(hips, axis=0))))
    ratios = (
        ((2, 5), 1.3),  # shoulder width
        ((16, 17), 3.0),  # ear to ear
        ((2, 3), 1.6),  # upper arms
        ((5, 6), 1.6),
        ((8, 9), 1.2),  # thighs
        ((11, 12), 1.2),
        ((9, 10), 1.2),  # shins
        ((12, 13), 1.2),
    )
    for (a, b), ratio in ratios:
        d = _dist(kp, ok, a, b)
        if d is not None:
            estimates.append(d * ratio)
    best = max(estimates, default=0.0)
    return best if best > 0 else None


def person_box(
    keypoints: np.ndarray, ok: np.ndarray, image_hw: tuple[int, int]
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) around the person: keypoint bbox extended to crown, soles and margins."""
    pts = keypoints[ok]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    unit = person_unit(keypoints, ok)
    if unit is None:
        # Too few keypoints to measure a body part: fall back on the keypoint spread.
        unit = max(x1 - x0, y1 - y0) / 3 or 0.1 * min(image_hw)
    head = [keypoints[i, 1] for i in HEAD if ok[i]]
    upper = [keypoints[i, 1] for i in (1, 2, 5) if ok[i]]
    top = y0
    if head:
        top = min(top, min(head) - CROWN_ABOVE_HEAD_POINTS * unit)
    elif upper:
        top = min(top, min(upper) - HEAD_ABOVE_NECK * unit)
    ankles = [keypoints[i, 1] for i in ANKLES if ok[i]]
    bottom = max(y1, max(ankles) + SOLES_BELOW_ANKLES * unit) if ankles else y1
    return (
        float(x0 - SIDE_MARGIN * unit),
        float(top - VERTICAL_MARGIN * unit),
        float(x1 + SIDE_MARGIN * unit),
        float(bottom + VERTICAL_MARGIN * unit),
    )


@dataclass(frozen=True)
class Folder:
    """Photos in one folder per identity, cropped around the person to `size` (H, W)."""

    csv_prefix: str = "photos"
    size: tuple[int, int] = (256, 256)  # stored (height, width)
    test_identities: float | tuple[str, ...] | None = None  # fraction or names held out as 'test'
    seed: int = 0  # for choosing a fraction of test identities
    pad: str = "constant"  # how a crop is filled where it leaves the photo (PAD_MODES)
    pad_value: tuple[int, int, int] = (255, 255, 255)  # RGB for pad='constant'
    max_side: int | None = None  # shrink loaded photos whose longer side exceeds this (px)
    name: str = "folder"

    def __post_init__(self) -> None:
        h, w = self.size
        if h < 8 or w < 8:
            raise ValueError(f"size must be at least 8x8, got {self.size}")
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {self.pad!r}")
        t = self.test_identities
        if isinstance(t, float | int) and not isinstance(t, bool):
            if not 0 <= t < 1:
                raise ValueError(f"test_identities as a fraction must be in [0, 1), got {t}")
        elif isinstance(t, list | tuple | set | frozenset):
            object.__setattr__(self, "test_identities", tuple(sorted(str(s) for s in t)))
        elif t is not None:
            raise ValueError(f"test_identities must be a fraction or a list of names, got {t!r}")
        object.__setattr__(self, "size", (int(h), int(w)))
        if len(self.pad_value) != 3:
            raise ValueError(f"pad_value must be an RGB triple, got {self.pad_value!r}")
        object.__setattr__(self, "pad_value", tuple(int(v) for v in self.pad_value))

    @property
    def frame(self) -> tuple[int, int, int]:
        return (self.size[0], self.size[1], 0)

    # ---- scanning -------------------------------------------------------------------------

    def scan(self, src: Path) -> ScanResult:
        root = require_dir(src)
        result = ScanResult()
        loose, _ = list_images(root)
        if loose:
            result.notes.append(
                f"{len(loose)} image(s) directly in {root.name}/ ignored: put each person's "
                "photos in a sub-folder named after them"
            )
        per_identity: dict[str, list[Path]] = {}
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            images, _ = list_images(sub, recursive=True)
            if images:
                per_identity[sub.name] = images
            else:
                result.notes.append(f"{sub.name}/ holds no images, skipped")
        if not per_identity:
            extra = f" ({len(loose)} loose image(s) found at the top level)" if loose else ""
            raise AdapterError(
                f"no images found in sub-folders of {root}: expected SRC/<identity>/<photos>{extra}"
            )
        test_ids = self._test_identities(sorted(per_identity), result)
        used: set[str] = set()
        renamed = 0
        for identity, images in per_identity.items():
            split = "test" if identity in test_ids else "train"
            for path in images:
                rel_in_id = path.relative_to(root / identity).as_posix()
                name = safe_name(f"{identity}_{rel_in_id.replace('/', '_')}")
                if name in used:
                    stem, ext = Path(name).stem, Path(name).suffix
                    k = 2
                    while f"{stem}-{k}{ext}" in used:
                        k += 1
                    name = f"{stem}-{k}{ext}"
                    renamed += 1
                used.add(name)
                result.records.setdefault(split, []).append(
                    Record(
                        name=name,
                        path=path,
                        rel_path=rel_posix(path, root),
                        split=split,
                        identity=printable_text(identity),
                    )
                )
        if renamed:
            result.notes.append(f"{renamed} name clash(es) resolved with a -2, -3 ... suffix")
        for split in result.records:
            result.records[split].sort(key=lambda r: r.name)
        return result

    def _test_identities(self, identities: list[str], result: ScanResult) -> set[str]:
        t = self.test_identities
        if t is None or t == 0:
            return set()
        if isinstance(t, tuple):
            unknown = sorted(set(t) - set(identities))
            if unknown:
                raise AdapterError(f"test identities not found as sub-folders: {unknown}")
            if set(t) >= set(identities):
                result.notes.append("every identity is held out: no 'train' split")
            return set(t)
        n = len(identities)
        if n < 2:
            result.notes.append("only one identity: none held out for 'test'")
            return set()
        k = min(n - 1, max(1, round(float(t) * n)))
        chosen = np.random.RandomState(self.seed).permutation(n)[:k]
        picked = sorted(identities[i] for i in chosen)
        result.notes.append(f"held out {k} of {n} identities for 'test': {', '.join(picked)}")
        return set(picked)

    # ---- per image ------------------------------------------------------------------------

    def load(self, record: Record) -> np.ndarray:
        """The whole photo as RGB uint8 (H, W, 3), shrunk to `max_side` if that is set."""
        image = load_rgb(record.path)
        h, w = image.shape[:2]
        if self.max_side is not None and max(h, w) > self.max_side:
            s = self.max_side / max(h, w)
            image = resize_exact(image, max(1, round(h * s)), max(1, round(w * s)))
        return image

    def finalize(
        self, image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crop the photo around the person to `size`, keypoints mapped into the crop.

        The box is the keypoint bbox extended to the crown, the soles and side margins, widened
        or heightened (centred) to the output aspect; where it leaves the photo the crop is
        padded (`pad`). Raises NoPersonError if no keypoint lies in the photo.
        """
        out, mapped, sc, _ = self.crop(image, keypoints, scores)
        return out, mapped, sc

    def crop(
        self, image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`finalize`, also returning the crop box float32 (x0, y0, x1, y1) in photo pixels."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W, 3) photo, got {image.dtype} {image.shape}")
        ph, pw = image.shape[:2]
        kp, sc = clip_keypoints(keypoints, scores, ph, pw)
        ok = kp[:, 0] >= 0
        if not ok.any():
            raise NoPersonError("no person found")
        out_h, out_w = self.size
        ix0, iy0, cw, ch = aspect_rect(*person_box(kp, ok, (ph, pw)), self.size)
        crop = self._crop_padded(image, ix0, iy0, cw, ch)
        out = resize_exact(crop, out_h, out_w)
        sx, sy = out_w / cw, out_h / ch
        mapped = kp.copy()
        # Pixel centres: cv2.resize maps output pixel u to input (u + 0.5) / s - 0.5.
        mapped[ok, 0] = (kp[ok, 0] - ix0 + 0.5) * sx - 0.5
        mapped[ok, 1] = (kp[ok, 1] - iy0 + 0.5) * sy - 0.5
        mapped, sc = clip_keypoints(mapped, sc, out_h, out_w)
        box = np.array([ix0, iy0, ix0 + cw, iy0 + ch], np.float32)
        return np.ascontiguousarray(out), mapped, sc, box

    def _crop_padded(self, image: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """image[y0:y0+h, x0:x0+w] with the parts outside the photo padded."""
        ph, pw = image.shape[:2]
        top, left = max(0, -y0), max(0, -x0)
        bottom, right = max(0, y0 + h - ph), max(0, x0 + w - pw)
        region = image[max(0, y0) : min(ph, y0 + h), max(0, x0) : min(pw, x0 + w)]
        if not (top or left or bottom or right):
            return region
        if self.pad == "edge":
            return cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REPLICATE)
        if self.pad == "reflect" and min(region.shape[:2]) > 1:
            return cv2.copyMakeBorder(region, top, bottom, left, right, cv2.BORDER_REFLECT_101)
        return cv2.copyMakeBorder(
            region, top, bottom, left, right, cv2.BORDER_CONSTANT, value=tuple(self.pad_value)
        )
