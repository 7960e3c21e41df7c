"""Atomic file writes: a temporary file beside the target, then os.replace (never half-written)."""

from __future__ import annotations

import os
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, written byte for byte ("\\n" stays "\\n" on every platform)."""
    return write_bytes(path, text.encode("utf-8"))
