"""Own photos listed in a table: a CSV (UTF-8, a BOM is fine) or Parquet file with one row per
photo and the columns `path` and `identity`, optionally `camera`, `split` and `frame`.

Relative paths are resolved against the table's folder. A row with a problem (empty or missing
path, missing file, empty or unusable identity, bad split, camera or frame, a repeated path) is a
failures.csv row naming its line; the others are prepared like `folder` photos (same person
finding, same crop). Parquet needs pyarrow (`pip install "pg2kit[parquet]"`), imported lazily.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pg2kit.datasets.base import AdapterError, Record, ScanResult, printable_text
from pg2kit.datasets.folder import Folder, safe_name

REQUIRED = ("path", "identity")
OPTIONAL = ("camera", "split", "frame")
_SPLIT_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_BAD_IDENTITY = re.compile(r"[\x00-\x1f\x7f/\\]")


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """(column names, [(line or row number, {column: value})]) of a CSV or Parquet table.

    CSV line numbers count the header as line 1; Parquet rows are numbered from 1.
    """
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise AdapterError(
                f"{path}: reading Parquet needs pyarrow; install it with "
                '`pip install "pg2kit[parquet]"` or save the table as CSV'
            ) from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise AdapterError(f"{path}: not a readable Parquet file ({_one_line(e)})") from None
        columns = [str(c) for c in table.column_names]
        return columns, [(i + 1, row) for i, row in enumerate(table.to_pylist())]
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig drops a leading BOM
    except UnicodeDecodeError as e:
        raise AdapterError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise AdapterError(f"{path}: cannot read ({e.strerror})") from None
    lines = text.splitlines()
    if not lines:
        raise AdapterError(f"{path}: empty table, expected a header line 'path,identity'")
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    header = [h.strip().lower() for h in next(reader)]
    rows = []
    for lineno, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # blank line
        row = {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}
        if len(values) > len(header):
            row["__extra__"] = len(values) - len(header)
        rows.append((lineno, row))
    return header, rows


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


def _int_or_none(value: Any, column: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        return -1
    if isinstance(value, float) and value != value:  # NaN from Parquet
        return -1
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{column} {value!r} is not a whole number") from None
    if not f.is_integer() or not -1 <= f < 2**31:
        raise ValueError(f"{column} {value!r} is not a whole number >= -1")
    return int(f)


@dataclass(frozen=True)
class Table(Folder):
    """Photos listed in a table; loaded and cropped like `Folder` photos."""

    name: str = "table"

    def scan(self, src: Path) -> ScanResult:
        table = Path(src).expanduser()
        if not table.is_file():
            raise AdapterError(f"{table} is not a file (expected a .csv or .parquet table)")
        table = table.resolve()
        base = table.parent
        columns, rows = read_rows(table)
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise AdapterError(
                f"{table}: no column {' or '.join(repr(c) for c in missing)} "
                f"(columns: {', '.join(columns) or 'none'}); needed: path, identity "
                f"[, {', '.join(OPTIONAL)}]"
            )
        result = ScanResult()
        unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
        if unknown:
            result.notes.append(f"{table.name}: ignored column(s) {', '.join(unknown)}")
        seen: dict[Path, int] = {}
        good: list[tuple[int, Path, str, str | None, int, int]] = []
        for line, row in rows:
            unit = "row" if table.suffix.lower() in (".parquet", ".pq") else "line"
            where = f"{table.name} {unit} {line}"
            raw = row.get("path")
            shown = printable_text(str(raw)) if raw not in (None, "") else where
            try:
                path, identity, split, camera, frame = self._row(row, base, seen)
            except ValueError as e:
                result.failures.append((shown, f"{where}: {e}"))
                continue
            seen[path] = line
            good.append((line, path, identity, split, camera, frame))
        if not good:
            why = ""
            if result.failures:
                why = f" ({len(result.failures)} bad row(s), e.g. {result.failures[0][1]})"
            raise AdapterError(f"{table}: no usable rows{why}")
        has_split = any(g[3] for g in good)
        test_ids = set()
        if not has_split:
            test_ids = self._test_identities(sorted({g[2] for g in good}), result)
        used: set[str] = set()
        for _line, path, identity, split, camera, frame in good:
            split = split or ("test" if identity in test_ids else "train")
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                rel = path.as_posix()
            rel = printable_text(rel)
            name = safe_name(f"{identity}_{Path(rel).name}")
            if name in used:
                stem, ext = Path(name).stem, Path(name).suffix
                k = 2
                while f"{stem}-{k}{ext}" in used:
                    k += 1
                name = f"{stem}-{k}{ext}"
            used.add(name)
            record = Record(name=name, path=path, rel_path=rel, split=split, identity=identity,
                            camera=camera, frame=frame)  # fmt: skip
            result.records.setdefault(split, []).append(record)
        return result

    def _row(self, row: dict[str, Any], base: Path, seen: dict[Path, int]):
        if row.get("__extra__"):
            raise ValueError(f"{row['__extra__']} more field(s) than the header has columns")
        raw = row.get("path")
        if raw is None or not str(raw).strip():
            raise ValueError("empty path")
        p = Path(os.path.expanduser(str(raw).strip()))
        path = (p if p.is_absolute() else base / p).resolve()
        if path in seen:
            raise ValueError(f"repeats the path of line {seen[path]}")
        if not path.exists():
            raise ValueError(f"file not found: {printable_text(str(path))}")
        if not path.is_file():
            raise ValueError(f"not a file: {printable_text(str(path))}")
        ident = row.get("identity")
        ident = "" if ident is None else str(ident).strip()
        if not ident:
            raise ValueError("empty identity")
        if _BAD_IDENTITY.search(ident) or ident in (".", ".."):
            raise ValueError(f"identity {ident!r} holds a path separator or control character")
        split = row.get("split")
        split = None if split is None or not str(split).strip() else str(split).strip()
        if split is not None and not _SPLIT_RE.match(split):
            raise ValueError(f"split {split!r} is not a plain name (letters, digits, _ or -)")
        camera = _int_or_none(row.get("camera"), "camera")
        frame = _int_or_none(row.get("frame"), "frame")
        return path, ident, split, camera, frame
