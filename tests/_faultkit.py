"""Helpers for the fault-injection tests: damaged prepared folders, CLI runs, small file systems."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner

from pg2kit import shards
from tests._shardfactory import make_prepared


def folder(root: Path, **kw) -> Path:
    """A small valid prepared folder (4 identities x 3 poses, shards of 5, pairs.h5)."""
    return make_prepared(root, **kw)


def files_under(path: Path) -> set[Path]:
    return {p for p in Path(path).rglob("*") if p.is_file()}


def invoke(args: list) -> object:
    """Run the `pg2kit` CLI in-process; returns click's Result."""
    from pg2kit.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def error_lines(result) -> list[str]:
    return [ln for ln in result.output.splitlines() if ln.startswith("Error:")]


def assert_one_line_error(result, *needles: str) -> str:
    """Exit code 1, no traceback, exactly one `Error:` line holding every needle."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"unhandled {type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    # `verify` prints one `problem:` line per problem before its one-line verdict
    text = "\n".join(
        [lines[0], *[ln for ln in result.output.splitlines() if ln.startswith("problem:")]]
    )
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"
    return text


def rewrite_marked(path: Path, edit, pairs_follow: bool = True) -> None:
    """Change a shard with `edit(h5py.File)` and re-write its done marker and manifest entry, so
    only the content differs (the cheap checks pass; what is inside is wrong). pairs_follow:
    pairs.h5 is re-stamped for the new shards (else it is stale)."""
    with h5py.File(path, "r+") as f:
        edit(f)
    root = path.parent.parent
    manifest = json.loads((root / shards.MANIFEST).read_text())
    for info in manifest["splits"].values():
        for entry in info["shards"]:
            if entry["file"] == f"{shards.SHARD_DIR}/{path.name}":
                entry["bytes"] = path.stat().st_size
                entry["sha256"] = shards.file_sha256(path)
                (path.parent / (path.name + ".done")).write_text(json.dumps(entry))
    (root / shards.MANIFEST).write_text(json.dumps(manifest))
    if pairs_follow and (root / shards.PAIRS).exists():
        with h5py.File(root / shards.PAIRS, "a") as f:
            f.attrs["shards_sha256"] = shards.shards_fingerprint(manifest)


def set_names(path: Path, names: list[str]) -> None:
    """Replace a shard's `name` dataset (bypassing write_shard's check) and re-mark it."""

    def edit(f):
        del f["name"]
        f.create_dataset("name", data=np.array(names, dtype=object), dtype=h5py.string_dtype())

    rewrite_marked(path, edit)


def write_raw_pairs(root: Path, pairs: np.ndarray, split: str = "train") -> None:
    """pairs.h5 written by hand (as a foreign tool would), keeping the fingerprint attrs."""
    path = Path(root) / shards.PAIRS
    with h5py.File(path, "a") as f:
        del f[split]
        f.create_dataset(split, data=np.asarray(pairs, np.int64))


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "1m"):
    """Mount a tmpfs of `size` at `where` (root only); yields None when that is not possible."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield None
        return
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", f"pg2kit-{uuid.uuid4().hex[:6]}", where],
        capture_output=True,
    )
    if r.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system of `folder` until about `leave` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    filler = folder / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def run_cli_subprocess(args: list, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m pg2kit.cli ARGS` in a child process (a crash there cannot take pytest down)."""
    return subprocess.run(
        [sys.executable, "-m", "pg2kit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
