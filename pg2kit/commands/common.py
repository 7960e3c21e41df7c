"""Small helpers shared by the CLI commands: size parsing and one-line errors."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'256x176' -> (256, 176) as (height, width)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not HxW, e.g. 256x256") from None
    if h < 16 or w < 16:
        raise click.BadParameter(f"{text!r}: height and width must be at least 16")
    return h, w


# errno values that are the user's environment, not a bug: worded in one line, exit code 1
_OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "not a folder",
    errno.EISDIR: "is a folder",
    errno.EIO: "input/output error",
    errno.EMFILE: "too many open files",
}


def one_line(err: BaseException) -> str | None:
    """The one-line message for a known error class, or None for an unknown one (a bug).

    Known: pg2kit's own error classes (every ValueError/RuntimeError subclass defined in pg2kit:
    PreparedError, FormatError, DataError, PrepareError, TrainError, ...), WriteError, and
    OSErrors of the environment (full disk, no permission, read-only, missing file, I/O error).
    """
    from pg2kit.atomic import WriteError

    if isinstance(err, WriteError):
        return str(err)
    if isinstance(err, OSError) and err.errno in _OS_REASONS:
        where = err.filename or ""
        reason = _OS_REASONS[err.errno]
        return f"{where}: {reason}" if where else f"{reason} ({err.strerror or err})"
    if isinstance(err, (ValueError, RuntimeError)) and type(err).__module__.startswith("pg2kit"):
        text = str(err).strip()
        return text.splitlines()[0] if text else type(err).__name__
    return None


def friendly_errors(func: F) -> F:
    """Decorator for click commands: known errors become one line on stderr and exit code 1.

    `click.ClickException`s, click's usage errors and unknown exceptions (bugs) pass through
    unchanged, so a real bug still shows its traceback.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - filtered by one_line
            text = one_line(e)
            if text is None:
                raise
            raise click.ClickException(text) from None

    return wrapper  # type: ignore[return-value]
