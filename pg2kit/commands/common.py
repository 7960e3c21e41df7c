"""Small helpers shared by the CLI commands."""

from __future__ import annotations

import click


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
