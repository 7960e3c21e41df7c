"""Atomic file writes: a temporary file beside the target, then os.replace (never half-written).

Every write error (a full disk, no permission, a read-only file system) becomes one `WriteError`
whose message names the file and, for a full disk, the space needed and the space free; the
temporary file is removed first, so re-running after freeing space starts clean.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error",
    errno.EFBIG: "file too large for this file system",
}


class WriteError(OSError):
    """A file could not be written. `str()` is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, code: int, message: str):
        super().__init__(code, message, str(path))
        self.path = Path(path)
        self.message = message

    def __str__(self) -> str:
        return self.message


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user in `folder` (or its nearest existing parent), None if unknown."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def write_error(
    path: str | os.PathLike, err: BaseException, needed: int | None = None
) -> WriteError:
    """The WriteError for a failed write of `path` (`needed`: bytes the write would take)."""
    if isinstance(err, WriteError):
        return err
    path = Path(path)
    code = getattr(err, "errno", None)
    text = str(err)
    if code is None and ("No space left" in text or "errno = 28" in text):
        code = errno.ENOSPC  # HDF5 reports it inside a RuntimeError/OSError message
    code = code or errno.EIO
    reason = _REASONS.get(code) or getattr(err, "strerror", None) or text.splitlines()[0]
    msg = f"cannot write {path}: {reason}"
    if code in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path.parent)
        msg += f" (needs {human_bytes(needed)}, {human_bytes(free)} free in {path.parent})"
        msg += "; free some space and run the command again"
    return WriteError(path, code, msg)


def check_space(path: str | os.PathLike, needed: int) -> None:
    """Raise the ENOSPC WriteError up front when `needed` bytes clearly do not fit."""
    free = free_bytes(Path(path).parent)
    if free is not None and needed > free:
        raise write_error(path, OSError(errno.ENOSPC, "No space left on device"), needed)


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name used while `path` is written (hidden, per process)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


_CLEANED: set[str] = set()  # folders whose dead temporaries this process already removed


def remove_dead_temps(path: str | os.PathLike) -> None:
    """Remove the temporary files (`.NAME.<pid>.tmp`) in `path`'s folder that were left by
    processes that no longer run (a SIGKILL cannot clean up after itself); those of live
    processes are left alone. One scan per folder and process, so writing many files into one
    folder stays linear."""
    folder = os.path.abspath(Path(path).parent)
    if folder in _CLEANED:
        return
    _CLEANED.add(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")):
            continue
        pid = name[:-4].rpartition(".")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            Path(entry.path).unlink(missing_ok=True)
        except (PermissionError, OverflowError, OSError):
            pass  # alive under another user, or not a pid: keep it


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error it is
    removed and an OSError becomes a WriteError naming `path`.

        with atomic_path("ckpt.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e, needed) from None
    remove_dead_temps(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        size = needed
        if size is None and tmp.exists():
            size = tmp.stat().st_size
        tmp.unlink(missing_ok=True)
        raise write_error(path, e, size) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    with atomic_path(path, needed=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text, written byte for byte ("\\n" stays "\\n" on every platform)."""
    return write_bytes(path, text.encode("utf-8"))
