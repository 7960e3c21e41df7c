"""The prepared folder's one owner: manifest.json, the HDF5 shards, pairs.h5 and their checks.

The layout is documented in docs/schema.md. Everything else in pg2kit reads and writes these
files through this module, and every problem with them is one `PreparedError` whose message
names the file (and row) and says what to do.

Checks on every open (cheap: a stat and a small JSON read per shard, the datasets' headers when
a shard is opened anyway): schema version, shard files present with the manifest's size and a
done marker that agrees, shard entries that stay inside `shards/`, the datasets a reader needs
with their dtypes and sample counts, plain file names, pair ids in range. `verify` adds the full
sha256 of every shard and reads every name.

Writers never let HDF5 write to the destination file system directly: a shard or pairs.h5 is
built in memory (HDF5 "core" driver) and written to a temporary file in one go; a full disk is
found before writing where possible and otherwise becomes a `WriteError` (pg2kit.atomic), with
the temporary file removed. (libhdf5 crashes the process when a file it writes fills the disk.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pg2kit.atomic import WriteError, check_space, remove_dead_temps, temp_path, write_error
from pg2kit.atomic import write_text as atomic_write_text

SCHEMA_VERSION = 1
SHARD_DIR = "shards"
MANIFEST = "manifest.json"
FAILURES = "failures.csv"
PAIRS = "pairs.h5"
STRING_FIELDS = ("name", "identity", "source_path")

# dtype kind ('u' unsigned, 'f' float, 'i' signed, 'b' bool, 'O'/'S' strings) and the shape after
# the sample axis (None: any) of every dataset a shard may hold
DATASET_RULES: dict[str, tuple[str, tuple[int | None, ...] | None]] = {
    "image": ("u", (None, None, 3)),
    "keypoints": ("f", (18, 2)),
    "scores": ("f", (18,)),
    "mask": ("u", (None, None)),
    "pose_map": ("uf", (None, None, 18)),
    "name": ("OS", ()),
    "identity": ("OS", ()),
    "source_path": ("OS", ()),
    "camera": ("iu", ()),
    "sequence": ("iu", ()),
    "frame": ("iu", ()),
    "track": ("iu", ()),
    "junk": ("b", ()),
    "distractor": ("b", ()),
    "source_box": ("f", (4,)),
    "detector_score": ("f", ()),
}


class PreparedError(ValueError):
    """A prepared folder that is missing, incomplete, damaged or of another schema version."""


SchemaError = PreparedError  # the older name; `except SchemaError` keeps working


class MissingDatasetError(PreparedError):
    """A shard lacks a dataset the reader asked for."""


class PreparedIndexError(PreparedError, IndexError):
    """A sample or pair id outside its split."""


# ---------------------------------------------------------------- names


_BAD_NAME = re.compile(r"[/\\\x00-\x1f\x7f]|^[A-Za-z]:")


def check_name(name: str, where: str = "") -> str:
    """`name` if it is a plain file name, else PreparedError naming `where` (file and row).

    Plain: not empty, not `.` or `..`, no `/` or `\\`, no drive prefix (`C:`), no NUL or other
    control character, and valid Unicode (no lone surrogates from undecodable bytes; adapters
    escape those, see docs/schema.md). Such a name can be joined to any output folder safely.
    """
    where = f"{where}: " if where else ""
    if not isinstance(name, str):
        raise PreparedError(f"{where}file name {name!r} is not text")
    if name in ("", ".", "..") or _BAD_NAME.search(name):
        raise PreparedError(
            f"{where}file name {name!r} is not a plain file name "
            "(no path separators, '..', drive prefix or control characters)"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise PreparedError(
            f"{where}file name {name!r} holds undecodable bytes; escape it (docs/schema.md)"
        ) from None
    return name


def check_names(names: Sequence[str] | np.ndarray, where: str) -> None:
    """check_name on every name; the error names `where` and the row (0-based sample index)."""
    for i, name in enumerate(names):
        if not isinstance(name, str) or name in ("", ".", "..") or _BAD_NAME.search(name):
            check_name(name, f"{where}, row {i}")


# ---------------------------------------------------------------- paths and markers


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


# ---------------------------------------------------------------- writing HDF5 safely


class _MemoryH5:
    """An HDF5 file built in memory and written to `path` atomically on success.

    libhdf5 cannot survive a full disk (it crashes the process at clean-up), so the file system
    only ever sees one plain write of the finished image. Its size is known before that write,
    so a disk that is too full is reported before anything is written.
    """

    def __init__(self, path: Path, estimate: int | None = None):
        self.path = Path(path)
        self.tmp = temp_path(self.path)
        self.estimate = estimate  # bytes, for the message when the size is not known yet

    def __enter__(self) -> h5py.File:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.path, e) from None
        remove_dead_temps(self.path)
        # backing_store=True: HDF5 writes the whole image to `tmp` at close, in one request
        # (creating it writes one block: the default 64 KiB, so a nearly full disk fails early)
        try:
            self.file = h5py.File(self.tmp, "w", driver="core", backing_store=True)
        except BaseException as e:
            self.tmp.unlink(missing_ok=True)
            if isinstance(e, Exception):
                raise write_error(self.path, e, self.estimate) from None
            raise
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        f = self.file
        if exc_type is not None:
            self._discard(f)
            return
        size = self.estimate
        try:
            f.flush()
            size = f.id.get_filesize()
            check_space(self.path, size)
            f.close()
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except BaseException as e:  # HDF5 raises RuntimeError/OSError alike; ^C too
            self._discard(f)
            if isinstance(e, Exception):
                raise write_error(self.path, e, size) from None
            raise

    def _discard(self, f: h5py.File) -> None:
        try:
            # drop the in-memory image without writing it: point the backing store at nothing
            f.close()
        except Exception:  # noqa: BLE001 - the original error matters, not this one
            pass
        self.tmp.unlink(missing_ok=True)


def _string_array(key: str, values: Sequence[str], path: Path) -> np.ndarray:
    data = np.array(list(values), dtype=object)
    for i, v in enumerate(data):
        if not isinstance(v, str):
            raise PreparedError(f"{path}: dataset {key!r}, row {i}: {v!r} is not text")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise PreparedError(
                f"{path}: dataset {key!r}, row {i}: {v!r} holds undecodable bytes; "
                "escape it (docs/schema.md)"
            ) from None
    return data


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
    Names are checked with `check_name` first (PreparedError naming the row); a write error is a
    WriteError naming the shard, with no temporary file left behind.
    """
    path = Path(path)
    compression = compression or {}
    count = None
    prepared: dict[str, tuple[str, np.ndarray]] = {}
    for key, value in arrays.items():  # validate everything before any file exists
        if key in STRING_FIELDS or (len(value) and isinstance(value[0], str)):
            data = _string_array(key, value, path)
            if key == "name":
                check_names(data, f"{path}: dataset 'name'")
            prepared[key] = ("str", data)
        else:
            prepared[key] = ("num", np.ascontiguousarray(value))
        n = len(prepared[key][1])
        if count is None:
            count = n
        elif count != n:
            raise ValueError(f"dataset {key!r} has {n} samples, expected {count}")
    estimate = sum(d.nbytes if k == "num" else sum(map(len, d)) for k, d in prepared.values())
    with _MemoryH5(path, estimate) as f:
        for key, (kind, data) in prepared.items():
            if kind == "str":
                ds = f.create_dataset(key, shape=(len(data),), dtype=h5py.string_dtype("utf-8"))
                if len(data):
                    ds[...] = data
            else:
                chunks = (1, *data.shape[1:]) if len(data) else None
                kw = _compression_args(compression.get(key)) if len(data) else {}
                f.create_dataset(key, data=data, chunks=chunks, **kw)
        for key, value in attrs.items():
            f.attrs[key] = value
    entry = {
        "file": f"{SHARD_DIR}/{path.name}",
        "count": int(count or 0),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    # the marker also records the file's mtime: a shard rewritten in place with the same size
    # (which no size check sees) is then hashed on open instead of being used silently
    stamp = {"mtime_ns": path.stat().st_mtime_ns}
    atomic_write_text(marker_path(path), json.dumps({**entry, **(marker or {}), **stamp}, indent=1))
    return entry


def read_marker(path: Path) -> dict[str, Any] | None:
    """The done marker of a finished shard, or None if the shard is unfinished or damaged."""
    path = Path(path)
    mk = marker_path(path)
    if not (path.exists() and mk.exists()):
        return None
    try:
        info = json.loads(mk.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(info, dict) or info.get("bytes") != path.stat().st_size:
        return None
    return info


def remove_shard(path: Path) -> None:
    path = Path(path)
    for p in (marker_path(path), path, path.with_name(path.name + ".tmp"), temp_path(path)):
        p.unlink(missing_ok=True)


# ---------------------------------------------------------------- manifest


def _entry_problems(root: Path, split: str, k: int, entry: Any) -> Iterator[str]:
    """Cheap problems of one shard entry of the manifest (no shard is opened)."""
    where = f"{Path(root) / MANIFEST}: splits.{split}.shards[{k}]"
    if not isinstance(entry, dict) or not {"file", "count", "bytes"} <= set(entry):
        yield f"{where}: expected {{file, count, bytes, sha256}}, got {str(entry)[:80]}"
        return
    file = entry["file"]
    parts = str(file).split("/")
    if len(parts) != 2 or parts[0] != SHARD_DIR:
        yield f"{where}: file {file!r} is not inside {SHARD_DIR}/"
        return
    try:
        check_name(parts[1], where)
    except PreparedError as e:
        yield str(e)
        return
    count, size = entry["count"], entry["bytes"]
    if not isinstance(count, int) or count < 0 or not isinstance(size, int) or size < 0:
        yield f"{where}: count and bytes must be non-negative integers"
        return
    path = Path(root) / file
    try:
        st = path.stat()
        actual = st.st_size
    except FileNotFoundError:
        yield f"{path}: listed in the manifest but missing; re-run `pg2kit prepare`"
        return
    if actual != size:
        yield (
            f"{path}: {actual} bytes, the manifest says {size} (truncated or rewritten); "
            "re-run `pg2kit prepare`"
        )
        return
    mk = marker_path(path)
    try:
        info = json.loads(mk.read_text(encoding="utf-8"))
    except FileNotFoundError:
        yield f"{path}: no done marker {mk.name} (unfinished shard); re-run `pg2kit prepare`"
        return
    except (OSError, ValueError) as e:
        yield f"{mk}: unreadable done marker ({e}); re-run `pg2kit prepare`"
        return
    if not isinstance(info, dict) or info.get("bytes") != size:
        yield f"{mk}: done marker disagrees with the shard's size; re-run `pg2kit prepare`"
    elif entry.get("sha256") and info.get("sha256") != entry["sha256"]:
        yield (
            f"{path}: its done marker and the manifest name different checksums "
            "(shard rewritten after the manifest); re-run `pg2kit prepare`"
        )
    elif isinstance(info.get("mtime_ns"), int) and info["mtime_ns"] != st.st_mtime_ns:
        # modified since it was written, or copied without its times: only the bytes can tell
        if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            yield (
                f"{path}: sha256 differs from the manifest (the file was changed after "
                "`pg2kit prepare` wrote it); re-run `pg2kit prepare`"
            )
        else:  # same bytes (a copy): remember the new time so the next open is cheap again
            try:
                atomic_write_text(mk, json.dumps({**info, "mtime_ns": st.st_mtime_ns}, indent=1))
            except OSError:
                pass  # a read-only folder: it is hashed again on the next open


def _manifest_problems(root: Path, manifest: dict[str, Any], files: bool) -> Iterator[str]:
    path = Path(root) / MANIFEST
    frame = manifest.get("frame")
    if not isinstance(frame, dict) or not all(
        isinstance(frame.get(k), int) and frame[k] > 0 for k in ("height", "width")
    ):
        yield f"{path}: no valid 'frame' (height and width in pixels)"
        return
    if not isinstance(manifest.get("dataset"), str):
        yield f"{path}: no 'dataset' name"
        return
    splits = manifest.get("splits")
    if not isinstance(splits, dict):
        yield f"{path}: no 'splits' table"
        return
    for split, info in splits.items():
        try:
            check_name(split, f"{path}: split")
        except PreparedError as e:
            yield str(e)
            continue
        entries = info.get("shards") if isinstance(info, dict) else None
        if not isinstance(entries, list):
            yield f"{path}: split {split!r} has no shard list"
            continue
        if files:
            for k, entry in enumerate(entries):
                yield from _entry_problems(root, split, k, entry)


def _read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise PreparedError(
            f"{root}: no {MANIFEST}; is this a folder made by `pg2kit prepare` (and did it finish)?"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PreparedError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise PreparedError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(manifest, dict):
        raise PreparedError(f"{path}: not a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PreparedError(
            f"{path}: schema version {version}, this pg2kit reads version {SCHEMA_VERSION}; "
            "re-run `pg2kit prepare --overwrite`"
        )
    return manifest


def load_manifest(root: Path, check: bool = True) -> dict[str, Any]:
    """manifest.json of a prepared folder, checked (PreparedError on the first problem).

    Checks: schema version, the split/shard tables, and with `check` every shard file present
    with the manifest's size and a done marker that agrees (a stat and a small read per shard).
    The returned `pairs` entry is the one pairs.h5 itself records (the truth when a run of
    `pairs` was killed between writing pairs.h5 and the manifest); absent without pairs.h5;
    with a `damaged` message when pairs.h5 cannot be read (`read_pairs` raises it, so that
    `pg2kit pairs` can still re-make it).
    """
    manifest = _read_manifest(root)
    for problem in _manifest_problems(root, manifest, files=check):
        raise PreparedError(problem)
    pairs_file = Path(root) / PAIRS
    if pairs_file.exists():
        try:
            manifest["pairs"] = pairs_info(root, manifest)
        except PreparedError as e:  # the shards are fine: only reading the pairs must fail
            manifest["pairs"] = {"protocol": "?", "params": {}, "counts": {}, "stale": False,
                                 "damaged": str(e)}  # fmt: skip
    else:
        manifest.pop("pairs", None)
    return manifest


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(Path(root) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def list_splits(root: Path) -> list[str]:
    return list(load_manifest(root)["splits"])


def split_shards(root: Path, split: str, manifest: dict[str, Any] | None = None) -> list[Path]:
    manifest = manifest or load_manifest(root)
    if split not in manifest["splits"]:
        have = ", ".join(manifest["splits"]) or "none"
        raise PreparedError(f"{root}: no split {split!r} (splits: {have})")
    return [Path(root) / s["file"] for s in manifest["splits"][split]["shards"]]


def split_count(manifest: dict[str, Any], split: str) -> int:
    """Samples of `split` according to the manifest's shard entries."""
    return int(sum(s["count"] for s in manifest["splits"][split]["shards"]))


# ---------------------------------------------------------------- shard contents


def _attr(f: h5py.File, name: str) -> Any:
    """One file attribute through the low-level API (the high-level one costs ~1 ms)."""
    key = name.encode()
    if not h5py.h5a.exists(f.id, key):
        return None
    a = h5py.h5a.open(f.id, key)
    out = np.empty(a.shape, a.dtype)
    a.read(out)
    return out[()] if out.shape == () else out


def _dataset_problems(
    f: h5py.File, path: Path, count: int | None, fields: Sequence[str], every: bool = False
) -> Iterator[str]:
    """Problems of a shard's header: schema version, and for `fields` (every dataset with
    `every`) presence, sample count and the dtype/shape docs/schema.md gives."""
    version = _attr(f, "schema_version")
    if version is not None and version != SCHEMA_VERSION:
        yield (
            f"{path}: schema version {version}, this pg2kit reads version {SCHEMA_VERSION}; "
            "re-run `pg2kit prepare --overwrite`"
        )
    keys = [k.decode() for k in f.id] if every else list(fields)
    for key in keys:
        if key.encode() not in f.id:
            yield f"{path}: no dataset {key!r}"
            continue
        try:
            ds = h5py.h5d.open(f.id, key.encode())  # low-level: ~3x cheaper than f[key]
        except (KeyError, ValueError, TypeError):
            continue  # a group, not a dataset
        shape, dtype = ds.shape, ds.dtype
        if count is not None and (len(shape) == 0 or shape[0] != count):
            yield f"{path}: dataset {key!r} has shape {shape}, the manifest says {count} samples"
            continue
        rule = DATASET_RULES.get(key)
        if rule is None:
            continue
        kinds, tail = rule
        kind = "O" if h5py.check_string_dtype(dtype) else dtype.kind
        if kind not in kinds or (
            tail is not None
            and (
                len(shape) != 1 + len(tail)
                or any(t is not None and t != s for t, s in zip(tail, shape[1:], strict=True))
            )
        ):
            yield f"{path}: dataset {key!r} is {dtype} {shape}, not as docs/schema.md says"


# shards whose headers were checked in this process: (path, size, mtime_ns, fields)
_CHECKED: set[tuple] = set()


def _check_key(path: Path, fields: Sequence[str]) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns, tuple(sorted(fields)))


def _open_shard(path: Path, count: int | None, fields: Sequence[str] = ()) -> h5py.File:
    """Open one shard read-only and check its header for `fields` (PreparedError if damaged);
    a shard already checked in this process, unchanged since, is not checked again."""
    key = _check_key(path, fields)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise PreparedError(f"{path}: listed in the manifest but missing") from None
    except OSError as e:
        reason = str(e).split("(")[0].strip() or "not an HDF5 file"
        raise PreparedError(
            f"{path}: cannot be read as HDF5 ({reason}); damaged or truncated, "
            "re-run `pg2kit prepare`"
        ) from None
    if key is not None and key in _CHECKED:
        return f
    try:
        for name in fields:
            if name.encode() not in f.id:
                raise MissingDatasetError(f"{path}: no dataset {name!r}")
        for problem in _dataset_problems(f, path, count, fields):
            raise PreparedError(problem)
    except BaseException:
        f.close()
        raise
    if key is not None:
        _CHECKED.add(key)
    return f


def _read_dataset(ds: h5py.Dataset, path: Path, key: str, sel=slice(None)) -> np.ndarray:
    try:
        return ds[sel]
    except OSError as e:
        raise PreparedError(
            f"{path}: dataset {key!r} cannot be read ({str(e).split('(')[0].strip()}); "
            "damaged shard, re-run `pg2kit prepare` (and `pg2kit verify`)"
        ) from None


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in values])
    return values


def read_split_fields(root: Path, split: str, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """Whole fields of a split, concatenated over its shards in sample-id order.

    String fields come back as numpy unicode arrays; names are checked with `check_name`.
    """
    manifest = load_manifest(root)
    paths = split_shards(root, split, manifest)
    entries = manifest["splits"][split]["shards"]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    for path, entry in zip(paths, entries, strict=True):
        with _open_shard(path, entry["count"], fields) as f:
            for key in fields:
                values = _decode(_read_dataset(f[key], path, key))
                if key == "name":
                    check_names(values, f"{path}: dataset 'name'")
                parts[key].append(values)
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}


def split_has_field(root: Path, split: str, key: str) -> bool:
    """Whether every shard of `split` holds dataset `key` (optional fields such as `track`)."""
    manifest = load_manifest(root)
    paths = split_shards(root, split, manifest)
    entries = manifest["splits"][split]["shards"]
    for path, entry in zip(paths, entries, strict=True):
        with _open_shard(path, entry["count"]) as f:
            if key not in f:
                return False
    return bool(paths)


def shard_attrs(root: Path, split: str | None = None) -> dict[str, Any]:
    """File attributes of the first shard (of `split`, or of the first split)."""
    manifest = load_manifest(root)
    if not manifest["splits"]:
        raise PreparedError(f"{root}: the manifest lists no splits")
    split = split or next(iter(manifest["splits"]))
    paths = split_shards(root, split, manifest)
    if not paths:
        raise PreparedError(f"{root}: split {split!r} has no shards")
    with _open_shard(paths[0], manifest["splits"][split]["shards"][0]["count"]) as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}


def check_split(root: Path, split: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    """Open every shard of `split` once and check its datasets (the `fields` must exist);
    returns the manifest. What a trainer calls before it starts."""
    manifest = load_manifest(root)
    for path, entry in zip(
        split_shards(root, split, manifest), manifest["splits"][split]["shards"], strict=True
    ):
        if _check_key(path, fields) not in _CHECKED:
            _open_shard(path, entry["count"], fields).close()
    return manifest


class SplitReader:
    """Random access to one split's samples by global sample id; opens shards lazily.

    Picklable: open file handles are dropped when pickled, so it can go to DataLoader workers.
    Each shard's datasets are checked when it is first opened; names are checked when read.
    """

    def __init__(self, root: Path, split: str):
        self.root = Path(root)
        self.split = split
        manifest = load_manifest(root)
        self.paths = split_shards(root, split, manifest)
        self.counts = [s["count"] for s in manifest["splits"][split]["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self._files: dict[int, h5py.File] = {}
        self._checked: set[tuple[int, str]] = set()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        state["_checked"] = set()
        return state

    def _file(self, k: int) -> h5py.File:
        f = self._files.get(k)
        if f is None:
            f = self._files[k] = _open_shard(self.paths[k], self.counts[k])
        return f

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, index inside the shard) of global sample ids."""
        ids = np.asarray(ids, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            bad = ids[(ids < 0) | (ids >= len(self))][0]
            raise PreparedIndexError(
                f"{self.root}: sample id {bad} of split {self.split!r} outside 0..{len(self) - 1}"
            )
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
            f = self._file(int(k))
            path = self.paths[int(k)]
            if (int(k), field) not in self._checked:
                if field.encode() not in f.id:
                    raise MissingDatasetError(f"{path}: no dataset {field!r}")
                for problem in _dataset_problems(f, path, self.counts[int(k)], [field]):
                    raise PreparedError(problem)
                self._checked.add((int(k), field))
            ds = f[field]
            if uniq[-1] - uniq[0] + 1 == len(uniq):  # a contiguous run: one slice read
                values = _decode(_read_dataset(ds, path, field, slice(uniq[0], uniq[-1] + 1)))
            else:  # one read per sample: h5py's list selection is far slower (per-chunk)
                values = _decode(np.stack([_read_dataset(ds, path, field, int(i)) for i in uniq]))
            if field == "name":
                check_names(values, f"{path}: dataset 'name'")
            if out is None:
                out = np.empty((len(ids), *values.shape[1:]), values.dtype)
            out[sel[order]] = values[inverse]
        if out is None:
            if not self.paths:
                return np.zeros(0)
            f = self._file(0)
            if field not in f:
                raise PreparedError(f"{self.paths[0]}: no dataset {field!r}")
            return np.empty((0, *f[field].shape[1:]), f[field].dtype)
        return out

    def read_all(self, field: str) -> np.ndarray:
        return read_split_fields(self.root, self.split, [field])[field]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


# ---------------------------------------------------------------- pairs.h5


def shards_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 over every split's shard checksums: which shards a pairs.h5 was made for."""
    desc = {
        split: [s.get("sha256", "") for s in info["shards"]]
        for split, info in sorted(manifest["splits"].items())
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def write_pairs(
    root: str | Path,
    pairs_by_split: dict[str, np.ndarray],
    protocol: str,
    params: dict[str, Any],
) -> Path:
    """Write ROOT/pairs.h5 (one int64 (P, 2) dataset per split) atomically, then the copy of its
    description under "pairs" in manifest.json.

    pairs.h5's attributes are the truth: `protocol`, `params` (JSON), `counts` (JSON) and
    `shards_sha256` (see `shards_fingerprint`). A kill between the two writes leaves a manifest
    entry that `load_manifest` replaces by pairs.h5's own, so readers never see them disagree.
    Pair ids are checked (non-negative, inside their split) before anything is written.
    """
    root = Path(root)
    manifest = _read_manifest(root)
    path = root / PAIRS
    arrays = {}
    for split, pairs in pairs_by_split.items():
        arr = np.ascontiguousarray(pairs, dtype=np.int64).reshape(-1, 2)
        if split in manifest.get("splits", {}):
            _check_pair_ids(arr, split_count(manifest, split), path, split)
        elif len(arr):
            raise PreparedError(f"{path}: pairs for split {split!r}, which the manifest lacks")
        arrays[split] = arr
    counts = {split: int(len(a)) for split, a in arrays.items()}
    for stale in root.glob(f".{PAIRS}.*.tmp"):  # left by a killed run
        stale.unlink(missing_ok=True)
    with _MemoryH5(path) as f:
        f.attrs["protocol"] = protocol
        f.attrs["params"] = json.dumps(params, sort_keys=True)
        f.attrs["counts"] = json.dumps(counts, sort_keys=True)
        f.attrs["shards_sha256"] = shards_fingerprint(manifest)
        for split, arr in arrays.items():
            f.create_dataset(split, data=arr)
    manifest["pairs"] = {"protocol": protocol, "params": params, "counts": counts}
    write_manifest(root, manifest)
    return path


def _check_pair_ids(arr: np.ndarray, n: int, path: Path, split: str) -> None:
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = np.flatnonzero(((arr < 0) | (arr >= n)).any(axis=1))
        raise PreparedIndexError(
            f"{path}: split {split!r}, pair row {int(bad[0])}: ids {arr[bad[0]].tolist()} "
            f"outside the split's samples 0..{n - 1} ({len(bad)} bad rows); re-run `pg2kit pairs`"
        )


def _open_pairs(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise PreparedError(
            f"{path}: no pair index; run `pg2kit pairs {path.parent}` first"
        ) from None
    except OSError as e:
        raise PreparedError(
            f"{path}: cannot be read as HDF5 ({str(e).split('(')[0].strip()}); "
            f"re-run `pg2kit pairs {path.parent}`"
        ) from None


def pairs_info(root: str | Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """pairs.h5's own description: {protocol, params, counts, stale}. `stale` is True when the
    shards changed since the pairs were made (their ids may point at other samples)."""
    root = Path(root)
    manifest = manifest if manifest is not None else _read_manifest(root)
    path = root / PAIRS
    with _open_pairs(path) as f:
        try:
            params = json.loads(f.attrs.get("params", "{}"))
            counts = {}
            for split in f:
                ds = f[split]
                if ds.ndim != 2 or ds.shape[1] != 2 or ds.dtype.kind not in "iu":
                    raise PreparedError(
                        f"{path}: /{split} is {ds.dtype} {ds.shape}, expected int64 (P, 2)"
                    )
                counts[split] = int(ds.shape[0])
            fingerprint = f.attrs.get("shards_sha256")
            protocol = f.attrs.get("protocol", "?")
        except (ValueError, TypeError) as e:
            if isinstance(e, PreparedError):
                raise
            raise PreparedError(
                f"{path}: damaged attributes ({e}); re-run `pg2kit pairs`"
            ) from None
    if isinstance(protocol, bytes):
        protocol = protocol.decode()
    stale = fingerprint is not None and fingerprint != shards_fingerprint(manifest)
    return {"protocol": str(protocol), "params": params, "counts": counts, "stale": stale}


def read_pairs(root: str | Path, split: str) -> np.ndarray:
    """The (P, 2) int64 pairs of `split`, checked: made for the current shards, ids in range."""
    root = Path(root)
    manifest = load_manifest(root)
    path = root / PAIRS
    if not path.exists():
        raise PreparedError(f"{root}: no {PAIRS}; run `pg2kit pairs {root}` first")
    if manifest["pairs"].get("damaged"):
        raise PreparedError(manifest["pairs"]["damaged"])
    if manifest["pairs"]["stale"]:
        raise PreparedError(
            f"{path}: made for other shards (prepare re-ran since); re-run `pg2kit pairs {root}`"
        )
    if split not in manifest["splits"]:
        have = ", ".join(manifest["splits"]) or "none"
        raise PairsMissingError(f"{root}: no split {split!r} (splits: {have})")
    with _open_pairs(path) as f:
        if split not in f:
            raise PairsMissingError(
                f"{path}: no pairs for split {split!r} (have: {', '.join(f) or 'none'})"
            )
        arr = _read_dataset(f[split], path, split).astype(np.int64)
    _check_pair_ids(arr, split_count(manifest, split), path, split)
    return arr


class PairsMissingError(PreparedError, KeyError):
    """pairs.h5 holds no pairs for the split asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# ---------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """What `verify` found: `problems` (one line each, naming the file) and what it checked."""

    root: Path
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    samples: int = 0
    pairs: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(root: str | Path, progress: bool = False) -> VerifyReport:
    """Full check of a prepared folder: everything `load_manifest` checks, for every shard (not
    just the first problem), plus each shard's sha256 against the manifest, its datasets and
    every name, and pairs.h5 (made for these shards, ids in range)."""
    root = Path(root)
    report = VerifyReport(root)
    try:
        manifest = _read_manifest(root)
    except PreparedError as e:
        report.problems.append(str(e))
        return report
    structural = list(_manifest_problems(root, manifest, files=False))
    if structural:
        report.problems.extend(structural)
        return report
    from tqdm.auto import tqdm

    entries = [
        (split, k, e)
        for split, info in manifest["splits"].items()
        for k, e in enumerate(info["shards"])
    ]
    for split, k, entry in tqdm(entries, desc="verify", unit="shard", disable=not progress):
        problems = list(_entry_problems(root, split, k, entry))
        report.problems.extend(problems)
        if problems:
            continue
        path = root / entry["file"]
        report.shards += 1
        report.bytes += entry["bytes"]
        if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
            report.problems.append(
                f"{path}: sha256 differs from the manifest (the file was changed or damaged); "
                "re-run `pg2kit prepare`"
            )
            continue
        try:
            with _open_shard(path, entry["count"], ("image", "keypoints", "name")) as f:
                for problem in _dataset_problems(f, path, entry["count"], (), every=True):
                    report.problems.append(problem)
                check_names(_decode(_read_dataset(f["name"], path, "name")), f"{path}: 'name'")
        except PreparedError as e:
            report.problems.append(str(e))
            continue
        report.samples += entry["count"]
    if (root / PAIRS).exists():
        try:
            info = pairs_info(root, manifest)
            if info["stale"]:
                report.problems.append(
                    f"{root / PAIRS}: made for other shards; re-run `pg2kit pairs {root}`"
                )
            else:
                for split in info["counts"]:
                    if split not in manifest["splits"]:
                        report.problems.append(f"{root / PAIRS}: split {split!r} not in manifest")
                        continue
                    with _open_pairs(root / PAIRS) as f:
                        arr = _read_dataset(f[split], root / PAIRS, split)
                    _check_pair_ids(arr, split_count(manifest, split), root / PAIRS, split)
                    report.pairs += len(arr)
        except PreparedError as e:
            report.problems.append(str(e))
        saved = manifest.get("pairs")
        if not report.problems and saved and saved.get("counts") != info["counts"]:
            report.problems.append(
                f"{root / MANIFEST}: its pairs entry disagrees with {PAIRS} (a killed "
                f"`pg2kit pairs`); pg2kit reads {PAIRS}; re-run `pg2kit pairs` to tidy up"
            )
    return report


__all__ = [
    "FAILURES",
    "MANIFEST",
    "PAIRS",
    "SCHEMA_VERSION",
    "SHARD_DIR",
    "MissingDatasetError",
    "PairsMissingError",
    "PreparedError",
    "PreparedIndexError",
    "SchemaError",
    "SplitReader",
    "VerifyReport",
    "WriteError",
    "check_name",
    "check_names",
    "check_split",
    "file_sha256",
    "list_splits",
    "load_manifest",
    "marker_path",
    "pairs_info",
    "read_marker",
    "read_pairs",
    "read_split_fields",
    "remove_shard",
    "shard_attrs",
    "shard_path",
    "split_count",
    "split_shards",
    "verify",
    "write_manifest",
    "write_pairs",
    "write_shard",
]
