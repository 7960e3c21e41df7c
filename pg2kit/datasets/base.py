"""The adapter interface shared by all dataset sources: Record, ScanResult, Adapter, errors, and
small helpers for listing images, fitting them into a frame and clipping keypoints to it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from pg2kit.imageio import IMAGE_EXTENSIONS


class AdapterError(ValueError):
    """The source folder does not have the layout an adapter expects (message says what is wrong)."""


class NoPersonError(ValueError):
    """No person was found in an image (all keypoints missing) where one is needed."""


@dataclass(frozen=True)
class Record:
    """One raw image of a source dataset, before keypoint estimation."""

    name: str  # community file name, original extension kept; unique within its split
    path: Path | None  # absolute path of the raw file (None: nothing is read, e.g. synthetic)
    rel_path: str  # path relative to the source root, '/'-separated
    split: str  # 'train' | 'test' | 'query' ...
    identity: str  # Market '0002'; DeepFashion 'id_00006370'; folder: the sub-folder name
    camera: int = -1
    sequence: int = -1
    frame: int = -1
    junk: bool = False
    distractor: bool = False
    key: Any = ()  # adapter-specific: synthetic (identity, pose); video frame data


@dataclass
class ScanResult:
    """What `Adapter.scan` found: records per split (sorted), rejected files and notes."""

    records: dict[str, list[Record]] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, one-line reason)
    notes: list[str] = field(default_factory=list)

    def count(self) -> int:
        """Total number of records over all splits."""
        return sum(len(v) for v in self.records.values())


@runtime_checkable
class Adapter(Protocol):
    """A raw dataset layout. Implementations are small frozen dataclasses (picklable for joblib)."""

    name: str  # 'market1501' | 'deepfashion' | 'folder'
    csv_prefix: str  # Def-GAN export file prefix: 'market' | 'fashion' | user-given
    frame: tuple[int, int, int]  # stored (height, width, x_offset)

    def scan(self, src: Path) -> ScanResult: ...

    def load(self, record: Record) -> np.ndarray: ...

    def finalize(
        self, image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def require_dir(src: str | Path) -> Path:
    """`src` as an absolute Path; AdapterError if it is not an existing directory."""
    p = Path(src).expanduser()
    if not p.exists():
        raise AdapterError(f"source folder {p} does not exist")
    if not p.is_dir():
        raise AdapterError(f"source {p} is not a folder")
    return p.resolve()


def list_images(folder: Path, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Image files (by extension, case-insensitive) under `folder`, sorted, and the other files.

    Hidden files and folders (names starting with '.') are ignored entirely.
    """
    images: list[Path] = []
    others: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        for f in files:
            if f.startswith("."):
                continue
            p = Path(root) / f
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else others).append(p)
    return sorted(images), sorted(others)


_SURROGATE = re.compile("[\udc80-\udcff]")


def printable_text(text: str) -> str:
    """`text` safe to store as UTF-8: bytes that were not valid UTF-8 in a file name (Python
    keeps them as surrogates U+DC80..U+DCFF) become %XX, e.g. b'caf\\xe9.jpg' -> 'caf%E9.jpg'."""
    return _SURROGATE.sub(lambda m: f"%{ord(m.group()) - 0xDC00:02X}", text)


def rel_posix(path: Path, root: Path) -> str:
    """`path` relative to `root` with '/' separators (non-UTF-8 bytes as %XX: printable_text)."""
    return printable_text(path.relative_to(root).as_posix())


def resize_exact(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to (height, width): INTER_AREA when shrinking, INTER_CUBIC when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    interp = cv2.INTER_AREA if height * width < h * w else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interp)


def fit_into(image: np.ndarray, height: int, width: int, pad_value: int = 255) -> np.ndarray:
    """Scale `image` to fit inside (height, width) keeping its aspect, centre it, pad the rest."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    s = min(height / h, width / w)
    nh = min(height, max(1, round(h * s)))
    nw = min(width, max(1, round(w * s)))
    scaled = resize_exact(image, nh, nw)
    top = (height - nh) // 2
    left = (width - nw) // 2
    return cv2.copyMakeBorder(
        scaled,
        top,
        height - nh - top,
        left,
        width - nw - left,
        cv2.BORDER_CONSTANT,
        value=(pad_value,) * 3,
    )


def clip_keypoints(
    keypoints: np.ndarray, scores: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (18, 2) outside a height x width image made missing (-1, -1) with score 0.

    A keypoint counts as inside if it rounds to a pixel of the image (-0.5 <= x < width - 0.5);
    those are clamped to [0, width-1] x [0, height-1] so that rounding stays in range.
    """
    kp = np.array(keypoints, np.float32, copy=True).reshape(-1, 2)
    sc = np.array(scores, np.float32, copy=True).reshape(-1)
    x, y = kp[:, 0], kp[:, 1]
    # An estimator may return a point slightly left of or above the image (x = -0.3): judge by
    # position, only the exact (-1, -1) marker means "missing" here.
    present = ~((x == -1) & (y == -1)) & np.isfinite(x) & np.isfinite(y)
    inside = present & (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    kp[inside, 0] = np.clip(x[inside], 0, width - 1)
    kp[inside, 1] = np.clip(y[inside], 0, height - 1)
    kp[~inside] = -1.0
    sc[~inside] = 0.0
    return kp, sc


def check_frame(image: np.ndarray, height: int, width: int) -> None:
    """ValueError unless `image` is uint8 (height, width, 3)."""
    if image.dtype != np.uint8 or image.shape != (height, width, 3):
        raise ValueError(
            f"expected a uint8 image of shape ({height}, {width}, 3), "
            f"got {image.dtype} {image.shape}"
        )
