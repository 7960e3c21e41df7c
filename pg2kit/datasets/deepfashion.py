"""DeepFashion In-shop adapter: reads the In-shop root (img/ or img_highres/ with train.lst/test.lst
or list_eval_partition.txt) or a folder of flattened images with train.lst/test.lst.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from pg2kit.datasets.base import (
    AdapterError,
    Record,
    ScanResult,
    check_frame,
    clip_keypoints,
    fit_into,
    list_images,
    rel_posix,
    require_dir,
)
from pg2kit.imageio import load_rgb

DF_SIZE = 256  # stored frame 256 x 256
CROP176_OFFSET = 40  # PATN's 176-wide frame keeps columns 40..215 of the 256 frame
CROP176_WIDTH = 176

GENDERS = ("MEN", "WOMEN")
_ITEM_DIR_RE = re.compile(r"^id_(\d{8})$")
# In-shop file names: '03_1_front.jpg' = item-group image 03, view 1, view name.
_INSHOP_FILE_RE = re.compile(r"^(\d+)_(\d+)_([A-Za-z]+)(\.[A-Za-z0-9]+)$")
# Flattened: prefix ('fashion' or the misspelt 'fasion'), gender, category (may hold '_'),
# 'id' + 8 digits, '03_1front' + extension.
_FLAT_RE = re.compile(
    r"^fa(?:sh|s)ion(WOMEN|MEN)(.+?)id(\d{8})(\d+)_(\d+)([A-Za-z]+)(\.[A-Za-z0-9]+)$"
)
_PARTITION_SPLITS = {"train": "train", "query": "test", "gallery": "test"}


def flatten_name(rel_path: str | Path) -> str:
    """In-shop path -> flattened pose-transfer name (SPEC section 2).

    'img/WOMEN/Blouses_Shirts/id_00006370/03_1_front.jpg' -> 'fashionWOMENBlouses_Shirtsid0000637003_1front.jpg'.
    Only the last four path parts (gender/category/id_XXXXXXXX/file) are used.
    """
    parts = PurePosixPath(str(rel_path).replace("\\", "/")).parts
    if len(parts) < 4:
        raise ValueError(f"{rel_path!r}: expected .../GENDER/CATEGORY/id_XXXXXXXX/FILE")
    gender, category, item_dir, fname = parts[-4:]
    if gender not in GENDERS:
        raise ValueError(f"{rel_path!r}: gender folder {gender!r} is not MEN or WOMEN")
    if _ITEM_DIR_RE.match(item_dir) is None:
        raise ValueError(f"{rel_path!r}: item folder {item_dir!r} is not id_ + 8 digits")
    head, sep, tail = fname.partition("_")
    return f"fashion{gender}{category}{item_dir.replace('_', '')}{head}{sep}{tail.replace('_', '')}"


def parse_flat_name(name: str) -> tuple[str, str, str, str]:
    """Flattened name -> (gender, category, item id 'id_XXXXXXXX', In-shop file name).

    Inverse of flatten_name for standard In-shop file names ('NN_V_view.ext'); accepts the
    'fasion' misspelling. ValueError if the name does not parse.
    """
    m = _FLAT_RE.match(name)
    if m is None:
        raise ValueError(
            f"{name!r} is not a flattened DeepFashion name "
            "(fashion + MEN|WOMEN + category + id + 8 digits + NN_Vview.ext)"
        )
    gender, category, digits, group, view, view_name, ext = m.groups()
    return gender, category, f"id_{digits}", f"{group}_{view}_{view_name}{ext}"


def canonical_key(name: str) -> str:
    """Lookup key of a flattened name: 'fashion' spelling, no extension."""
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return "fashion" + stem[len("fasion") :] if stem.startswith("fasion") else stem


def read_lst(path: Path) -> list[str]:
    """Names listed one per line in a pose-transfer train.lst / test.lst (blank lines skipped)."""
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


def read_partition(path: Path) -> dict[str, str]:
    """list_eval_partition.txt -> {'img/.../file.jpg': 'train' | 'query' | 'gallery'}.

    The file starts with a count line and a header line; both are skipped if present.
    """
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) != 3 or fields[0] == "image_name":
            continue  # count line, header line, blanks
        out[fields[0]] = fields[2]
    return out


def _find_partition(root: Path) -> Path | None:
    for cand in ("list_eval_partition.txt", "Eval/list_eval_partition.txt"):
        if (root / cand).is_file():
            return root / cand
    return None


@dataclass(frozen=True)
class DeepFashion:
    """DeepFashion In-shop images in the 256x256 frame, or PATN's 176-wide crop (`crop176`)."""

    crop176: bool = False  # store columns 40..215 (frame (256, 176, 40)), keypoints x - 40
    pad_value: int = 255  # colour of the padding when a non-256x256 image is fitted (white)
    name: str = "deepfashion"
    csv_prefix: str = "fashion"

    @property
    def frame(self) -> tuple[int, int, int]:
        if self.crop176:
            return (DF_SIZE, CROP176_WIDTH, CROP176_OFFSET)
        return (DF_SIZE, DF_SIZE, 0)

    # ---- scanning -------------------------------------------------------------------------

    def scan(self, src: Path) -> ScanResult:
        root = require_dir(src)
        image_dir = next((root / d for d in ("img", "img_highres") if (root / d).is_dir()), None)
        has_lst = (root / "train.lst").is_file() or (root / "test.lst").is_file()
        if image_dir is not None:
            result = self._scan_inshop(root, image_dir, has_lst)
        elif has_lst:
            result = self._scan_flat(root)
        else:
            hint = ""
            if any((root / g).is_dir() for g in GENDERS):
                hint = " (this looks like the img/ folder itself: pass the folder that holds it)"
            raise AdapterError(
                f"{root} is not a DeepFashion source: expected the In-shop root with img/ (or "
                "img_highres/) and list_eval_partition.txt or train.lst/test.lst, or a folder of "
                f"flattened images with train.lst/test.lst{hint}"
            )
        if result.count() == 0:
            why = ""
            if result.failures:
                path, reason = result.failures[0]
                why = f" ({len(result.failures)} rejected, e.g. {path}: {reason})"
            raise AdapterError(f"no usable DeepFashion images under {root}{why}")
        for split in result.records:
            result.records[split].sort(key=lambda r: r.name)
        return result

    def _lst_splits(self, root: Path, result: ScanResult) -> dict[str, str]:
        """canonical key -> split from train.lst / test.lst."""
        key_split: dict[str, str] = {}
        for split in ("train", "test"):
            lst = root / f"{split}.lst"
            if not lst.is_file():
                result.notes.append(f"{split}.lst absent: no '{split}' split")
                continue
            for name in read_lst(lst):
                key = canonical_key(name)
                if key_split.get(key, split) != split:
                    result.failures.append((name, "listed in both train.lst and test.lst"))
                    key_split[key] = ""  # excluded from both
                    continue
                key_split[key] = split
        return key_split

    def _scan_inshop(self, root: Path, image_dir: Path, has_lst: bool) -> ScanResult:
        result = ScanResult()
        images, others = list_images(image_dir, recursive=True)
        if others:
            result.notes.append(f"ignored {len(others)} non-image file(s), e.g. {others[0].name}")
        if image_dir.name != "img":
            result.notes.append(f"images read from {image_dir.name}/ and fitted into 256x256")
        # Validate paths and flatten names first.
        found: list[tuple[Path, str, str]] = []  # (path, flattened name, 'img/...' partition key)
        for path in images:
            rel = rel_posix(path, image_dir)
            parts = rel.split("/")
            if len(parts) != 4 or _INSHOP_FILE_RE.match(parts[3]) is None:
                result.failures.append(
                    (rel_posix(path, root), "not an In-shop path GENDER/CATEGORY/id_X/NN_V_view")
                )
                continue
            try:
                flat = flatten_name(rel)
            except ValueError as exc:
                result.failures.append((rel_posix(path, root), str(exc)))
                continue
            found.append((path, flat, "img/" + rel))

        if has_lst:
            result.notes.append("split from train.lst / test.lst (pose-transfer split)")
            key_split = self._lst_splits(root, result)
            splits = [key_split.get(canonical_key(flat)) for _, flat, _ in found]
            found_keys = {canonical_key(flat) for _, flat, _ in found}
            missing = sum(1 for k, s in key_split.items() if s and k not in found_keys)
            if missing:
                result.notes.append(f"{missing} listed name(s) have no image file")
        else:
            part_file = _find_partition(root)
            if part_file is None:
                raise AdapterError(
                    f"{root}: no split file; put train.lst/test.lst (pose-transfer split) or "
                    "list_eval_partition.txt (or Eval/list_eval_partition.txt) there"
                )
            partition = read_partition(part_file)
            result.notes.append(
                f"split from {rel_posix(part_file, root)}: 'train' -> train, 'query' and "
                "'gallery' -> test (the retrieval split, not the pose-transfer one; give "
                "train.lst/test.lst for that)"
            )
            splits = []
            for path, _, key in found:
                status = partition.get(key)
                if status is not None and status not in _PARTITION_SPLITS:
                    result.failures.append(
                        (rel_posix(path, root), f"unknown evaluation_status {status!r}")
                    )
                    splits.append("")
                    continue
                splits.append(None if status is None else _PARTITION_SPLITS[status])
        unlisted = 0
        for (path, flat, _), split in zip(found, splits, strict=True):
            if split is None:
                unlisted += 1
                continue
            if not split:
                continue
            _, _, item_id, _ = parse_flat_name(flat)
            rec = Record(
                name=flat,
                path=path,
                rel_path=rel_posix(path, root),
                split=split,
                identity=item_id,
            )
            result.records.setdefault(split, []).append(rec)
        if unlisted:
            result.notes.append(f"{unlisted} image(s) are in no split and were left out")
        return result

    def _scan_flat(self, root: Path) -> ScanResult:
        result = ScanResult()
        result.notes.append("flattened images; split from train.lst / test.lst")
        key_split = self._lst_splits(root, result)
        images, _ = list_images(root, recursive=True)
        by_key: dict[str, list[Path]] = {}
        for path in images:
            by_key.setdefault(canonical_key(path.name), []).append(path)
        duplicates = 0
        missing = 0
        for key, split in sorted(key_split.items()):
            if not split:
                continue
            paths = by_key.get(key)
            if not paths:
                missing += 1
                continue
            if len(paths) > 1:
                duplicates += 1
                # Prefer the copy inside a folder named after its split (PATN: train/, test/).
                paths = sorted(paths, key=lambda p: (p.parent.name != split, str(p)))
            path = paths[0]
            try:
                _, _, item_id, _ = parse_flat_name(path.name)
            except ValueError as exc:
                result.failures.append((rel_posix(path, root), str(exc)))
                continue
            rec = Record(
                name=path.name,
                path=path,
                rel_path=rel_posix(path, root),
                split=split,
                identity=item_id,
            )
            result.records.setdefault(split, []).append(rec)
        if missing:
            result.notes.append(f"{missing} listed name(s) have no image file")
        if duplicates:
            result.notes.append(f"{duplicates} name(s) found more than once; one copy used")
        unlisted = sum(1 for k in by_key if k not in key_split)
        if unlisted:
            result.notes.append(f"{unlisted} image(s) are in no .lst file and were left out")
        return result

    # ---- per image ------------------------------------------------------------------------

    def load(self, record: Record) -> np.ndarray:
        """RGB uint8 (256, 256, 3). Other sizes (img_highres 750x1101) are scaled to fit 256x256,
        keeping the aspect, and centred on `pad_value` (white, like the studio background)."""
        return fit_into(load_rgb(record.path), DF_SIZE, DF_SIZE, self.pad_value)

    def finalize(
        self, image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """256x256 as loaded, or the 176-wide crop with keypoints shifted by -40; keypoints
        outside the stored frame become missing."""
        check_frame(image, DF_SIZE, DF_SIZE)
        kp = np.array(keypoints, np.float32, copy=True).reshape(-1, 2)
        if self.crop176:
            image = np.ascontiguousarray(image[:, CROP176_OFFSET : CROP176_OFFSET + CROP176_WIDTH])
            marked = (kp[:, 0] == -1) & (kp[:, 1] == -1)
            kp[~marked, 0] -= CROP176_OFFSET
        h, w = image.shape[:2]
        kp, sc = clip_keypoints(kp, scores, h, w)
        return image, kp, sc
