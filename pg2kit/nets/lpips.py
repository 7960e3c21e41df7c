"""LPIPS with the AlexNet backbone (Zhang et al. 2018), written for pg2kit (no torchvision).

Two weight sets, both files the user gives: the AlexNet convolutions (torchvision's
`alexnet-owt-7be5be79.pth`, keys `features.{0,3,6,8,10}.*`) and the five linear heads that the
`lpips` wheel ships as `lpips/weights/v0.1/alex.pth` (or `v0.0`; keys `lin{0..4}.model.1.weight`).
One combined file holding both key sets (or an `lpips.LPIPS` state dict with `net.slice*` keys)
works as well. Version 0.1 scales the inputs ((x - shift) / scale) before AlexNet; 0.0 does not
(as the `lpips` package does). Inputs: uint8 images; distance per pair (lower is more similar).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from pg2kit.nets import WeightsError, load_state_dict

__all__ = ["ALEXNET_SOURCE", "LPIPS_SOURCE", "LPIPSAlex", "load_lpips"]

ALEXNET_SOURCE = (
    "get torchvision's AlexNet weights alexnet-owt-7be5be79.pth (download.pytorch.org/models/) "
    "and pass --alexnet-weights (or one combined file as --lpips-weights)"
)
LPIPS_SOURCE = (
    "the linear heads ship inside the `lpips` wheel as lpips/weights/v0.1/alex.pth (pip download "
    "lpips, or github.com/richzhang/PerceptualSimilarity); pass --lpips-weights"
)
# AlexNet conv layers: (index in torchvision's `features`, in, out, kernel, stride, padding)
_CONVS = ((0, 3, 64, 11, 4, 2), (3, 64, 192, 5, 1, 2), (6, 192, 384, 3, 1, 1),
          (8, 384, 256, 3, 1, 1), (10, 256, 256, 3, 1, 1))  # fmt: skip
_WIDTHS = tuple(c[2] for c in _CONVS)
# lpips.ScalingLayer constants (inputs in [-1, 1])
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPSAlex(nn.Module):
    """AlexNet relu1..relu5 features, unit-normalised per pixel, squared differences weighted by
    the linear heads, averaged over space, summed over the five layers."""

    def __init__(self, version: str = "0.1"):
        super().__init__()
        if version not in ("0.1", "0.0"):
            raise ValueError(f"LPIPS version must be 0.1 or 0.0, got {version!r}")
        self.version = version
        self.features = nn.ModuleDict(
            {str(i): nn.Conv2d(cin, cout, k, s, p) for i, cin, cout, k, s, p in _CONVS}
        )
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _WIDTHS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for j, (i, *_) in enumerate(_CONVS):
            if j in (1, 2):  # max pools before conv2 and conv3
                x = F.max_pool2d(x, 3, stride=2)
            x = F.relu(self.features[str(i)](x))
            out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) pairs -> (B,) distances."""
        x = a.float() / 127.5 - 1
        y = b.float() / 127.5 - 1
        if self.version == "0.1":
            x = (x - self.shift) / self.scale
            y = (y - self.shift) / self.scale
        d = 0
        for lin, fx, fy in zip(self.lin, self._feats(x), self._feats(y), strict=True):
            fx = fx / (fx.square().sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.square().sum(1, keepdim=True).sqrt() + 1e-10)
            d = d + lin((fx - fy).square()).mean(dim=(1, 2, 3))
        return d


def _backbone(sd: dict) -> dict:
    """AlexNet conv tensors as `features.<i>.*` from torchvision or lpips.LPIPS key names."""
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"(?:net\.)?features\.(\d+)\.(weight|bias)", k)
        if m:
            out[f"{m.group(1)}.{m.group(2)}"] = v
            continue
        # lpips.LPIPS: net.slice1.0 (conv1), slice2.3, slice3.6, slice4.8, slice5.10
        m = re.fullmatch(r"net\.slice\d\.(\d+)\.(weight|bias)", k)
        if m:
            out[f"{m.group(1)}.{m.group(2)}"] = v
    return out


def _heads(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        m = re.fullmatch(r"lin(\d)\.model\.1\.weight|lin(\d)\.weight", k)
        if m:
            out[f"{m.group(1) or m.group(2)}.weight"] = v
    return out


def load_lpips(
    lpips_path: str | Path,
    alexnet_path: str | Path | None = None,
    version: str = "0.1",
    device: str | torch.device = "cpu",
) -> LPIPSAlex:
    """LPIPS-Alex from a heads file (+ an AlexNet file, unless the heads file holds both)."""
    heads_what = "the LPIPS linear-head file (--lpips-weights)"
    sd = load_state_dict(lpips_path, heads_what, LPIPS_SOURCE)
    heads = _heads(sd)
    if len(heads) != 5:
        raise WeightsError(f"{lpips_path}: not {heads_what}: expected keys lin0..lin4, found none")
    backbone = _backbone(sd)
    source = lpips_path
    if len(backbone) != 10:
        if alexnet_path is None:
            raise WeightsError(
                f"{lpips_path}: holds no AlexNet convolutions and no --alexnet-weights was given; "
                + ALEXNET_SOURCE
            )
        alex_what = "the AlexNet weight file (--alexnet-weights)"
        backbone = _backbone(load_state_dict(alexnet_path, alex_what, ALEXNET_SOURCE))
        source = alexnet_path
        if len(backbone) != 10:
            raise WeightsError(f"{alexnet_path}: not {alex_what}: no features.N.weight/bias keys")
    net = LPIPSAlex(version)
    for name, part, have in (("AlexNet", net.features, backbone), ("LPIPS heads", net.lin, heads)):
        own = part.state_dict()
        for k, v in own.items():
            if k not in have or tuple(have[k].shape) != tuple(v.shape):
                got = tuple(have[k].shape) if k in have else "missing"
                where = source if name == "AlexNet" else lpips_path
                raise WeightsError(
                    f"{where}: {name} tensor {k!r} is {got}, expected {tuple(v.shape)}"
                )
        part.load_state_dict({k: have[k] for k in own})
    return net.eval().requires_grad_(False).to(device)
