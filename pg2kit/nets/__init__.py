"""Metric backbones written for pg2kit (no torchvision): the TF-Inception 2015-12-05 port used by
IS and FID, and AlexNet + LPIPS linear heads. Weights always come from files the user gives."""

from __future__ import annotations

from pathlib import Path

__all__ = ["WeightsError", "load_state_dict"]


class WeightsError(ValueError):
    """A weight file is missing or does not fit; the message is one line naming the file."""


def load_state_dict(path: str | Path, what: str, where: str) -> dict:
    """A tensor dict from `path` (a .pth/.pt state dict, possibly wrapped in {"state_dict": ...}).

    `what` names the file's role, `where` says where users usually get it (for the message).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {what} not found; pg2kit never downloads it: {where}")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, pickle with code, not a torch file ...
        raise WeightsError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "net"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"{path}: {what}: expected a state dict of tensors")
    return sd


def check_keys(sd: dict, module, path, what: str, ignore: tuple[str, ...] = ()) -> dict:
    """`sd` restricted to `module`'s keys; WeightsError naming missing keys or shape mismatches."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(
            f"{path}: not {what}: {len(missing)} tensor(s) missing, e.g. {missing[0]!r}"
        )
    bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        k = bad[0]
        raise WeightsError(
            f"{path}: not {what}: {k!r} has shape {tuple(sd[k].shape)}, expected "
            f"{tuple(own[k].shape)}"
        )
    return {k: sd[k] for k in own if k in sd}
