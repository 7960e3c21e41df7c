"""HDF5 shards of a prepared folder: atomic writer with done markers, manifest, and readers.

The layout is documented in docs/schema.md; everything here reads and writes plain h5py/json.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pg2kit.atomic import write_text as atomic_write_text

SCHEMA_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
FAILURES = "failures.csv"
PAIRS = "pairs.h5"
STRING_FIELDS = ("name", "identity", "source_path")


class SchemaError(ValueError):
    """A prepared folder that is missing, incomplete or of another schema version."""


def shard_path(root: Path, split: str, index: int) -> Path:
    return Path(root) / SHARD_DIR / f"{split}-{index:05d}.h5"


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def _compression_args(name: str | None) -> dict[str, Any]:
    if name in (None, "none"):
        return {}
    if name == "lzf":
        return {"compression": "lzf"}
    if name.startswith("gzip"):
        level = int(name[4:]) if name[4:].isdigit() else 4
        return {"compression": "gzip", "compression_opts": level}
    raise ValueError(f"unknown compression {name!r} (none, lzf, gzip1..gzip9)")


def write_shard(
    path: Path,
    arrays: dict[str, np.ndarray | Sequence[str]],
    attrs: dict[str, Any],
    compression: dict[str, str | None] | None = None,
    marker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one shard atomically and then its done marker; returns the shard's manifest entry.

    arrays: dataset name -> array with the sample axis first (strings as a list of str).
    compression: dataset name -> 'none' | 'lzf' | 'gzipN'; datasets not named are uncompressed.
    marker: extra JSON-able facts kept in the done marker (failures, parameters).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    compression = compression or {}
    count = None
    with h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            if key in STRING_FIELDS or (len(value) and isinstance(value[0], str)):
                data = np.array(list(value), dtype=object)
                ds = f.create_dataset(key, shape=(len(data),), dtype=h5py.string_dtype("utf-8"))
                if len(data):
                    ds[...] = data
            else:
                data = np.ascontiguousarray(value)
                chunks = (1, *data.shape[1:]) if len(data) else None
                kw = _compression_args(compression.get(key)) if len(data) else {}
                f.create_dataset(key, data=data, chunks=chunks, **kw)
            if count is None:
                count = len(data)
            elif count != len(data):
                raise ValueError(f"dataset {key!r} has {len(data)} samples, expected {count}")
        for key, value in attrs.items():
            f.attrs[key] = value
    os.replace(tmp, path)
    entry = {
        "file": f"{SHARD_DIR}/{path.name}",
        "count": int(count or 0),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    atomic_write_text(marker_path(path), json.dumps({**entry, **(marker or {})}, indent=1))
    return entry


def read_marker(path: Path) -> dict[str, Any] | None:
    """The done marker of a finished shard, or None if the shard is unfinished or damaged."""
    path = Path(path)
    mk = marker_path(path)
    if not (path.exists() and mk.exists()):
        return None
    try:
        info = json.loads(mk.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if info.get("bytes") != path.stat().st_size:
        return None
    return info


def remove_shard(path: Path) -> None:
    path = Path(path)
    for p in (marker_path(path), path, path.with_name(path.name + ".tmp")):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------- manifest


def load_manifest(root: Path) -> dict[str, Any]:
    """manifest.json of a prepared folder, checked for the schema version."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise SchemaError(
            f"{root}: no {MANIFEST}; is this a folder made by `pg2kit prepare` (and did it finish)?"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not valid JSON ({e})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{path}: schema version {version}, this pg2kit reads version {SCHEMA_VERSION}; "
            "re-run `pg2kit prepare --overwrite`"
        )
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def list_splits(root: Path) -> list[str]:
    return list(load_manifest(root)["splits"])


def split_shards(root: Path, split: str, manifest: dict[str, Any] | None = None) -> list[Path]:
    manifest = manifest or load_manifest(root)
    if split not in manifest["splits"]:
        have = ", ".join(manifest["splits"]) or "none"
        raise SchemaError(f"{root}: no split {split!r} (splits: {have})")
    return [Path(root) / s["file"] for s in manifest["splits"][split]["shards"]]


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in values])
    return values


def read_split_fields(root: Path, split: str, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Whole fields of a split, concatenated over its shards in sample-id order.

    String fields come back as numpy unicode arrays.
    """
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    for path in split_shards(root, split):
        with h5py.File(path, "r") as f:
            for key in fields:
                if key not in f:
                    raise SchemaError(f"{path}: no dataset {key!r}")
                parts[key].append(_decode(f[key][...]))
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}


def shard_attrs(root: Path, split: str | None = None) -> dict[str, Any]:
    """File attributes of the first shard (of `split`, or of the first split)."""
    manifest = load_manifest(root)
    split = split or next(iter(manifest["splits"]))
    paths = split_shards(root, split, manifest)
    if not paths:
        raise SchemaError(f"{root}: split {split!r} has no shards")
    with h5py.File(paths[0], "r") as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


class SplitReader:
    """Random access to one split's samples by global sample id; opens shards lazily.

    Picklable: open file handles are dropped when pickled, so it can go to DataLoader workers.
    """

    def __init__(self, root: Path, split: str):
        self.root = Path(root)
        self.split = split
        manifest = load_manifest(root)
        self.paths = split_shards(root, split, manifest)
        counts = [s["count"] for s in manifest["splits"][split]["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._files: dict[int, h5py.File] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def _file(self, k: int) -> h5py.File:
        f = self._files.get(k)
        if f is None:
            f = self._files[k] = h5py.File(self.paths[k], "r")
        return f

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, index inside the shard) of global sample ids."""
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"sample id out of range 0..{len(self) - 1}")
        shard = np.searchsorted(self.offsets, ids, side="right") - 1
        return shard, ids - self.offsets[shard]

    def read(self, field: str, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Samples `ids` (any order, repeats allowed) of one field, stacked in that order."""
        ids = np.asarray(ids, np.int64)
        shard, local = self.locate(ids)
        out = None
        for k in np.unique(shard):
            sel = np.nonzero(shard == k)[0]
            idx = local[sel]
            order = np.argsort(idx, kind="stable")
            uniq, inverse = np.unique(idx[order], return_inverse=True)
            ds = self._file(int(k))[field]
            if uniq[-1] - uniq[0] + 1 == len(uniq):  # a contiguous run: one slice read
                values = _decode(ds[int(uniq[0]) : int(uniq[-1]) + 1])
            else:  # one read per sample: h5py's list selection is far slower (per-chunk)
                values = _decode(np.stack([ds[int(i)] for i in uniq]))
            if out is None:
                out = np.empty((len(ids), *values.shape[1:]), values.dtype)
            out[sel[order]] = values[inverse]
        if out is None:
            with h5py.File(self.paths[0], "r") as f:
                ds = f[field]
                return np.empty((0, *ds.shape[1:]), ds.dtype)
        return out

    def read_all(self, field: str) -> np.ndarray:
        return read_split_fields(self.root, self.split, [field])[field]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
