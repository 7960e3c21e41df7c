"""Exchange formats: Def-GAN/PATN annotation CSV, pairs CSV and OpenPose per-image JSON.

Keypoints come and go as pg2kit arrays ((N,) 18, 2) float32 (x, y), (-1, -1) missing (SPEC 2).
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pg2kit.atomic import write_text
from pg2kit.keypoints import (
    MAX_COORD,
    MISSING,
    NUM_KEYPOINTS,
    empty_keypoints,
    present,
    sanitize_keypoints,
)

DEFGAN_HEADER_YX = "name:keypoints_y:keypoints_x"
DEFGAN_HEADER_XY = "name:keypoints_x:keypoints_y"  # old files stored x first
PAIRS_HEADER = "from,to"

# COCO-18 keypoint i is BODY_25 part BODY25_TO_COCO18[i]; BODY_25 adds MidHip (8) and the feet.
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)


# byte classes for the fast structure check of the coordinate lists
_OTHER, _OPEN, _CLOSE, _COMMA, _BLANK = range(5)
_CHAR_CLASS = np.zeros(256, np.uint8)
_CHAR_CLASS[ord("[")], _CHAR_CLASS[ord("]")], _CHAR_CLASS[ord(",")] = _OPEN, _CLOSE, _COMMA
_CHAR_CLASS[[ord(" "), ord("\t")]] = _BLANK


class FormatError(ValueError):
    """A malformed exchange file; the message names the file and, where it helps, the line."""


@dataclass
class AnnotationTable:
    """Rows of a Def-GAN annotation CSV: names (N,) and keypoints (N, 18, 2) float32 (x, y).

    dropped: keypoints read as missing because a coordinate was non-finite or absurd
    (|v| > MAX_COORD pixels), for the caller to report.
    """

    names: list[str]
    keypoints: np.ndarray
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.names)


# ---------------------------------------------------------------- Def-GAN annotation CSV


def _parse_defgan_row(path: Path, lineno: int, line: str) -> tuple[str, list, list]:
    """Slow, careful parse of one row; raises FormatError naming the line."""
    where = f"{path}, line {lineno}"
    parts = line.rsplit(":", 2)  # names never hold ':' in practice, but split from the right
    if len(parts) != 3:
        raise FormatError(
            f"{where}: expected 3 ':'-separated fields (name: [y...]: [x...]), got {len(parts)}"
        )
    name, first, second = parts
    if not name.strip():
        raise FormatError(f"{where}: empty file name")
    lists = []
    for field in (first, second):
        try:
            values = json.loads(field)
        except json.JSONDecodeError:
            raise FormatError(f"{where}: not a list of numbers: {field.strip()[:60]!r}") from None
        if not isinstance(values, list):
            raise FormatError(f"{where}: not a list of numbers: {field.strip()[:60]!r}")
        if len(values) != NUM_KEYPOINTS:
            raise FormatError(f"{where}: list has {len(values)} values, expected {NUM_KEYPOINTS}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FormatError(f"{where}: non-numeric value {str(v)[:40]!r}")
        # huge integers (400 digits) do not fit a float: absurd, read as NaN -> missing
        lists.append([v if isinstance(v, float) or abs(v) <= MAX_COORD else float("nan")
                      for v in values])  # fmt: skip
    return name, lists[0], lists[1]


def _fast_parse(rows: list[tuple[int, str]]) -> tuple[list[str], np.ndarray | None]:
    """Names and (2N, 18) coordinate lists of well-formed all-integer rows, or (_, None).

    One np.fromstring over all lists joined, no Python object per value; any
    irregularity returns None so that the careful parse can report it.
    """
    names: list[str] = []
    fields: list[str] = []
    for _, line in rows:
        parts = line.rsplit(":", 2)
        if len(parts) != 3 or not parts[0].strip():
            return names, None
        names.append(parts[0])
        fields.append(parts[1])
        fields.append(parts[2])
    if not fields:
        return names, np.zeros((0, NUM_KEYPOINTS))
    try:
        b = np.frombuffer(",".join(fields).encode("ascii"), np.uint8)
    except UnicodeEncodeError:
        return names, None
    # structure check in numpy: every field is "[" 17 commas "]", only blanks/commas between
    cls = _CHAR_CLASS[b]
    opens, closes = np.flatnonzero(cls == _OPEN), np.flatnonzero(cls == _CLOSE)
    if len(opens) != len(fields) or len(closes) != len(fields) or not (opens < closes).all():
        return names, None
    if len(fields) > 1 and not (closes[:-1] < opens[1:]).all():
        return names, None
    # sums over the segments [open_k, close_k) (inside list k) and [close_k, open_k+1) (between)
    bounds = np.stack([opens, closes], axis=1).ravel()
    commas = np.add.reduceat(cls == _COMMA, bounds, dtype=np.int32)
    if not (commas[0::2] == NUM_KEYPOINTS - 1).all() or not (commas[1::2][:-1] == 1).all():
        return names, None
    other = cls == _OTHER
    stray = np.add.reduceat(other, bounds, dtype=np.int32)[1::2]
    if commas[-1] or stray.any() or other[: opens[0]].any():  # text outside the lists
        return names, None
    del other
    numbers = b[(cls == _OTHER) | (cls == _COMMA)].tobytes().decode("ascii")
    del cls
    with warnings.catch_warnings():
        # numpy stops at the first unparsable token with a DeprecationWarning: treat it as bad
        warnings.simplefilter("error")
        try:
            values = np.fromstring(numbers, dtype=np.int64, sep=",")
        except (DeprecationWarning, ValueError):
            return names, None
    if values.size != len(fields) * NUM_KEYPOINTS:
        return names, None
    return names, values.reshape(len(fields), NUM_KEYPOINTS)


def read_defgan_annotations(path: str | Path) -> AnnotationTable:
    """Read a Def-GAN/PATN annotation CSV (header `name:keypoints_y:keypoints_x` or x-first).

    Raises FormatError naming the file and 1-based line for any malformed header or row, and
    naming both lines for a name given twice. A UTF-8 byte-order mark is accepted. Non-finite or
    absurd coordinates (|v| > 1e6) are read as missing and counted in `dropped`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: not UTF-8 text ({e.reason})") from None
    lines = text.splitlines()
    del text  # keep the peak memory near a few times the file size
    if not lines:
        raise FormatError(f"{path}, line 1: empty file, expected header {DEFGAN_HEADER_YX!r}")
    header = lines[0].strip()
    if header not in (DEFGAN_HEADER_YX, DEFGAN_HEADER_XY):
        raise FormatError(
            f"{path}, line 1: header {header[:60]!r} is neither {DEFGAN_HEADER_YX!r} "
            f"nor {DEFGAN_HEADER_XY!r}"
        )
    y_first = header == DEFGAN_HEADER_YX
    rows = [(i + 2, line) for i, line in enumerate(lines[1:]) if line.strip()]

    names, values = _fast_parse(rows)
    if values is None:
        # something is irregular (or not an int): the careful parse names the first bad line
        parsed = [_parse_defgan_row(path, lineno, line) for lineno, line in rows]
        names = [r[0] for r in parsed]
        values = np.array([[r[1], r[2]] for r in parsed], np.float64).reshape(-1, NUM_KEYPOINTS)

    seen: dict[str, int] = {}
    for (lineno, _), name in zip(rows, names, strict=True):
        first_line = seen.setdefault(name, lineno)
        if first_line != lineno:
            raise FormatError(f"{path}, lines {first_line} and {lineno}: name {name!r} given twice")

    values = values.reshape(len(rows), 2, NUM_KEYPOINTS).astype(np.float64)
    first, second = values[:, 0], values[:, 1]
    y, x = (first, second) if y_first else (second, first)
    keypoints, dropped = sanitize_keypoints(np.stack([x, y], axis=-1))  # (N, 18, 2) x, y
    keypoints[~present(keypoints)] = MISSING  # one missing coordinate makes the point missing
    return AnnotationTable(names=names, keypoints=keypoints, dropped=dropped)


def _int_coords(keypoints: np.ndarray) -> np.ndarray:
    """(N, 18, 2) float -> int64, rounded half up to the nearest pixel; missing -> -1."""
    kp = np.asarray(keypoints, np.float64)
    out = np.floor(kp + 0.5).astype(np.int64)
    out[~present(kp)] = -1
    return out


def write_defgan_annotations(path: str | Path, names: Sequence[str], keypoints: np.ndarray) -> None:
    """Write the community annotation CSV (y list first, integer pixels, -1 missing), atomically.

    keypoints: (N, 18, 2) (x, y); floats are rounded to the nearest int (halves up).
    """
    path = Path(path)
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 2) or len(kp) != len(names):
        raise ValueError(
            f"keypoints must be ({len(names)}, {NUM_KEYPOINTS}, 2) for {len(names)} names, "
            f"got {kp.shape}"
        )
    coords = _int_coords(kp).tolist()
    out = [DEFGAN_HEADER_YX + "\n"]
    for name, pts in zip(names, coords, strict=True):
        if not name or any(c in name for c in "\r\n:"):
            raise ValueError(f"file name {name!r} is empty or holds ':' or a line break")
        ys = ", ".join(str(p[1]) for p in pts)
        xs = ", ".join(str(p[0]) for p in pts)
        out.append(f"{name}: [{ys}]: [{xs}]\n")
    write_text(path, "".join(out))


# ---------------------------------------------------------------- pairs CSV


def read_pairs_csv(path: str | Path) -> list[tuple[str, str]]:
    """Read a pairs CSV (header `from,to`; a UTF-8 BOM is accepted) into (source, target) names."""
    path = Path(path)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["from", "to"]:
            raise FormatError(f"{path}, line 1: header must be {PAIRS_HEADER!r}, got {header!r}")
        pairs = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2 or not row[0] or not row[1]:
                raise FormatError(
                    f"{path}, line {reader.line_num}: expected 'from,to' names, got {row!r}"
                )
            pairs.append((row[0], row[1]))
    return pairs


def write_pairs_csv(path: str | Path, pairs: Iterable[tuple[str, str]]) -> None:
    """Write a pairs CSV (header `from,to`, `\\n` line ends), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["from", "to"])
    writer.writerows((a, b) for a, b in pairs)
    write_text(Path(path), buf.getvalue())


# ---------------------------------------------------------------- OpenPose JSON


def read_openpose_json(
    path: str | Path, width: int | None = None, height: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The highest-scoring person of an OpenPose per-image JSON as COCO-18 (18, 2), (18,).

    Accepts BODY_25 (75 values) and COCO-18 (54 values) in `pose_keypoints_2d` (or the older
    `pose_keypoints`). The best person has the highest mean confidence over its present parts
    (ties: more parts, then the first). Parts with confidence 0, and with `width`/`height` given
    parts outside the image [0, width) x [0, height), are missing, and so are non-finite or
    absurd (|v| > 1e6) coordinates. No people: all missing. Anything malformed: FormatError.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: not valid JSON ({str(e)[:80]})") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from None
    people = doc.get("people") if isinstance(doc, dict) else None
    if not isinstance(people, list):
        raise FormatError(f"{path}: no 'people' list (is this an OpenPose keypoint JSON?)")

    best = empty_keypoints()
    best_key = (-1.0, -1)
    for k, person in enumerate(people):
        if not isinstance(person, dict):
            raise FormatError(f"{path}: person {k} is not a JSON object")
        flat = person.get("pose_keypoints_2d", person.get("pose_keypoints"))
        if flat is None:
            raise FormatError(f"{path}: person {k} has no 'pose_keypoints_2d'")
        if not isinstance(flat, list):
            raise FormatError(f"{path}: person {k}: 'pose_keypoints_2d' is not a list")
        if len(flat) == 0:
            continue  # OpenPose writes an empty list when the body model was off
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in flat):
            raise FormatError(f"{path}: person {k}: keypoints are not x,y,c numbers")
        flat = [v if isinstance(v, float) or abs(v) <= MAX_COORD else float("nan") for v in flat]
        try:
            arr = np.asarray(flat, np.float64).reshape(-1, 3)
        except ValueError:
            raise FormatError(f"{path}: person {k}: keypoints are not x,y,c numbers") from None
        if len(arr) == 25:
            arr = arr[list(BODY25_TO_COCO18)]
        elif len(arr) != NUM_KEYPOINTS:
            raise FormatError(
                f"{path}: person {k} has {len(flat)} values; expected 75 (BODY_25) or 54 (COCO-18)"
            )
        kp, conf = arr[:, :2].copy(), np.nan_to_num(arr[:, 2], nan=0.0, posinf=0.0, neginf=0.0)
        with np.errstate(invalid="ignore"):
            ok = (conf > 0) & np.isfinite(kp).all(axis=1) & (np.abs(kp) <= MAX_COORD).all(axis=1)
        if width is not None:
            ok &= (kp[:, 0] >= 0) & (kp[:, 0] < width)
        if height is not None:
            ok &= (kp[:, 1] >= 0) & (kp[:, 1] < height)
        kp[~ok] = MISSING
        conf[~ok] = 0.0
        n = int(ok.sum())
        key = (float(conf[ok].mean()) if n else 0.0, n)
        if key > best_key:
            best_key, best = key, (kp.astype(np.float32), conf.astype(np.float32))
    return best
