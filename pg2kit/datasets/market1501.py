"""Market-1501 adapter: reads the dataset root (bounding_box_train / bounding_box_test / query)
and yields records with identity, camera, sequence and frame parsed from the file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pg2kit.datasets.base import (
    AdapterError,
    Record,
    ScanResult,
    check_frame,
    clip_keypoints,
    list_images,
    rel_posix,
    require_dir,
    resize_exact,
)
from pg2kit.imageio import load_rgb

# (folder, split) in the order they are reported.
MARKET_SPLITS = (("bounding_box_train", "train"), ("bounding_box_test", "test"), ("query", "query"))

# '0002_c1s1_000451_03': identity (or -1 for junk), camera, sequence, frame, box index.
MARKET_NAME_RE = re.compile(r"^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)$")

MARKET_HEIGHT, MARKET_WIDTH = 128, 64


def parse_market_name(name: str) -> tuple[str, int, int, int]:
    """(identity, camera, sequence, frame) of a Market file name; ValueError if it does not parse."""
    m = MARKET_NAME_RE.match(Path(name).stem)
    if m is None:
        raise ValueError(
            f"name {name!r} does not match the Market pattern ID_cCsS_FRAME_BOX "
            "(e.g. 0002_c1s1_000451_03.jpg)"
        )
    ident, cam, seq, frame, _box = m.groups()
    return ident, int(cam), int(seq), int(frame)


@dataclass(frozen=True)
class Market1501:
    """Market-1501 crops, stored at 128x64 (H x W)."""

    name: str = "market1501"
    csv_prefix: str = "market"

    @property
    def frame(self) -> tuple[int, int, int]:
        return (MARKET_HEIGHT, MARKET_WIDTH, 0)

    def scan(self, src: Path) -> ScanResult:
        root = require_dir(src)
        present = [(d, s) for d, s in MARKET_SPLITS if (root / d).is_dir()]
        if not present:
            expected = ", ".join(d for d, _ in MARKET_SPLITS)
            hint = ""
            nested = sorted(
                c.name
                for c in root.iterdir()
                if c.is_dir() and any((c / d).is_dir() for d, _ in MARKET_SPLITS)
            )
            if nested:
                hint = f"; did you mean {root / nested[0]}?"
            raise AdapterError(
                f"{root} is not a Market-1501 root: none of the folders {expected} is there{hint}"
            )
        result = ScanResult()
        for folder, split in MARKET_SPLITS:
            if (folder, split) not in present:
                result.notes.append(f"{folder}/ absent, split '{split}' skipped")
        for folder, split in present:
            images, others = list_images(root / folder)
            if others:
                result.notes.append(
                    f"{folder}/: ignored {len(others)} non-image file(s), e.g. {others[0].name}"
                )
            records: list[Record] = []
            for path in images:
                try:
                    ident, cam, seq, frame = parse_market_name(path.name)
                except ValueError as exc:
                    result.failures.append((rel_posix(path, root), str(exc)))
                    continue
                records.append(
                    Record(
                        name=path.name,
                        path=path,
                        rel_path=rel_posix(path, root),
                        split=split,
                        identity=ident,
                        camera=cam,
                        sequence=seq,
                        frame=frame,
                        junk=ident == "-1",
                        distractor=ident == "0000",
                    )
                )
            if not records:
                result.notes.append(f"{folder}/ holds no usable images")
            result.records[split] = sorted(records, key=lambda r: r.name)
        if result.count() == 0:
            why = ""
            if result.failures:
                path, reason = result.failures[0]
                why = f" ({len(result.failures)} file(s) rejected, e.g. {path}: {reason})"
            raise AdapterError(f"no usable Market-1501 images under {root}{why}")
        return result

    def load(self, record: Record) -> np.ndarray:
        """The crop as RGB uint8 (128, 64, 3); other sizes are resized (stretched) to 128x64."""
        return resize_exact(load_rgb(record.path), MARKET_HEIGHT, MARKET_WIDTH)

    def finalize(
        self, image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The loaded image is already the stored frame; keypoints outside it become missing."""
        check_frame(image, MARKET_HEIGHT, MARKET_WIDTH)
        kp, sc = clip_keypoints(keypoints, scores, MARKET_HEIGHT, MARKET_WIDTH)
        return image, kp, sc
