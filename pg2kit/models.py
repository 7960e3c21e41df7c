"""PG2 networks: the coarse generator G1, the refining generator G2 and the DCGAN discriminator.

Architecture per SPEC section 5; images are NCHW in [-1, 1], pose maps enter as map * 2 - 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "Arch",
    "Discriminator",
    "G1",
    "G2",
    "build_models",
    "check_resolution",
    "default_repeat",
    "param_counts",
]


def default_repeat(height: int) -> int:
    """R = log2(H) - 2 (5 at H = 128, 6 at H = 256), as in the PG2 code."""
    if height < 8 or height & (height - 1):
        raise ValueError(f"height {height} is not a power of two >= 8; give the repeat count R")
    return height.bit_length() - 1 - 2


def check_resolution(height: int, width: int, repeat: int) -> tuple[int, int]:
    """Bottleneck (rows, cols) of G1 for an H x W input, or ValueError with the reason.

    G1 halves the resolution R - 1 times, so H and W must be divisible by 2^(R-1); G2 uses R - 2
    levels and is then satisfied as well.
    """
    if repeat < 3:
        raise ValueError(f"repeat R = {repeat} is too small: G2 needs R - 2 >= 1 levels")
    f = 2 ** (repeat - 1)
    if height % f or width % f:
        raise ValueError(
            f"resolution {height}x{width} (H x W) is not divisible by 2^(R-1) = {f} "
            f"for R = {repeat}; crop or resize the data, or choose another --repeat"
        )
    return height // f, width // f


@dataclass(frozen=True)
class Arch:
    """Everything that fixes the parameter shapes; stored in checkpoints and compared on load."""

    height: int = 128
    width: int = 64
    channels: int = 128  # n, the base channel count
    repeat: int = 5  # R, encoder/decoder levels of G1
    z_dim: int = 64  # width of G1's FC bottleneck
    g2_full_res_skip: bool = False  # False on Market (SPEC 5), True on DeepFashion
    disc: str = "triplet"  # "triplet" (3-ch single images) or "conditional" (6-ch source+image)
    disc_layers: int = 4  # stride-2 5x5 convs of D: 4 at 128x64, 5 at 256x256
    disc_channels: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    # "same" padding for odd kernels; with stride 2 this halves even sizes exactly
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=True)


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


D_INIT_STD = 0.02  # public PG2 code: D's weights uniform with this standard deviation


def _uniform_init(module: nn.Module, std: float) -> None:
    bound = std * 3**0.5  # U(-a, a) has std a / sqrt(3)
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _ResBlock(nn.Module):
    """Two 3x3 conv + ReLU at constant width c, optionally with x + f(x)."""

    def __init__(self, c: int, residual: bool = True):
        super().__init__()
        self.conv1 = _conv(c, c)
        self.conv2 = _conv(c, c)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return x + y if self.residual else y


class G1(nn.Module):
    """Coarse generator: U-Net with residual blocks and a linear FC bottleneck (SPEC 5).

    Input (B, 21, H, W) = source image (3) + target pose map (18, as map * 2 - 1); output
    (B, 3, H, W), linear. With n = 128, R = 5 at 128x64 the levels are 128x64x128, 64x32x256,
    32x16x384, 16x8x512, 8x4x640; the bottleneck flattens 8x4x640 = 20,480 -> 64 -> 8x4x128.

    Choices where SPEC is silent: every conv except the output one is followed by ReLU (also
    the stride-2 and the 1x1 upsampling convs); the residual add comes after the second ReLU;
    the two FC layers are linear (no activation), as SPEC says.
    """

    def __init__(self, arch: Arch, in_channels: int = 21):
        super().__init__()
        n, r = arch.channels, arch.repeat
        self.bottom_hw = check_resolution(arch.height, arch.width, r)
        hb, wb = self.bottom_hw
        self.n, self.repeat = n, r
        self.stem = _conv(in_channels, n)
        self.enc = nn.ModuleList(_ResBlock(n * (i + 1)) for i in range(r))
        self.down = nn.ModuleList(_conv(n * (i + 1), n * (i + 2), 3, 2) for i in range(r - 1))
        self.fc_in = nn.Linear(hb * wb * n * r, arch.z_dim)
        self.fc_out = nn.Linear(arch.z_dim, hb * wb * n)
        # decoder level j concatenates skip R-1-j (n*(R-j) channels) onto x: n*R + n at j = 0,
        # 2*n*(R-j) afterwards (the 1x1 conv after upsampling brings x to n*(R-j-1))
        widths = [n * r + n] + [2 * n * (r - j) for j in range(1, r)]
        self.dec = nn.ModuleList(_ResBlock(c) for c in widths)
        self.up = nn.ModuleList(_conv(widths[j], n * (r - j - 1), 1) for j in range(r - 1))
        self.out = _conv(widths[-1], 3)
        _xavier_init(self)

    def forward(self, source: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(torch.cat([source, pose], 1)))  # (B, n, H, W)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)  # (B, n*(i+1), H/2^i, W/2^i)
            skips.append(x)
            if i < self.repeat - 1:
                x = F.relu(self.down[i](x))  # (B, n*(i+2), H/2^(i+1), W/2^(i+1))
        b = x.shape[0]
        z = self.fc_in(x.flatten(1))  # (B, z_dim)
        x = self.fc_out(z).view(b, self.n, *self.bottom_hw)  # (B, n, H/2^(R-1), W/2^(R-1))
        for j, block in enumerate(self.dec):
            x = block(torch.cat([x, skips[self.repeat - 1 - j]], 1))
            if j < self.repeat - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                x = F.relu(self.up[j](x))  # (B, n*(R-j-1), 2x rows, 2x cols)
        return self.out(x)  # (B, 3, H, W), linear


class G2(nn.Module):
    """Refining generator: fully convolutional U-Net on (coarse, source), outputs a difference map.

    Input (B, 6, H, W); L = R - 2 levels, no residual adds, no FC. Encoder level i: two 3x3 convs
    to n*(i+1), then (except last) a stride-2 3x3 conv that keeps n*(i+1) channels. Decoder level
    j: concat encoder level L-1-j, two 3x3 convs to n, then (except last) nearest x2 (no 1x1 conv).
    With `full_res_skip=False` (Market) the last decoder level gets no skip. The refined image is
    coarse + G2(coarse, source). Parameters with n = 128: 6,058,883 at 128x64 (R = 5, no
    full-resolution skip), 12,696,067 at 256x256 (R = 6, with it), as in the public PG2 code.

    ReLU after every conv except the linear output conv; a stem conv to n as in G1.
    """

    def __init__(self, arch: Arch, in_channels: int = 6):
        super().__init__()
        n = arch.channels
        levels = arch.repeat - 2
        check_resolution(arch.height, arch.width, arch.repeat)
        self.levels, self.full_res_skip = levels, arch.g2_full_res_skip
        self.stem = _conv(in_channels, n)
        # level i: conv n*i -> n*(i+1) (n -> n at level 0), conv n*(i+1) -> n*(i+1)
        self.enc1 = nn.ModuleList(_conv(n * max(i, 1), n * (i + 1)) for i in range(levels))
        self.enc2 = nn.ModuleList(_conv(n * (i + 1), n * (i + 1)) for i in range(levels))
        self.down = nn.ModuleList(_conv(n * (i + 1), n * (i + 1), 3, 2) for i in range(levels - 1))
        self.dec1 = nn.ModuleList()
        for j in range(levels):
            skip = n * (levels - j) if self._has_skip(j) else 0
            cin = (n * levels if j == 0 else n) + skip
            self.dec1.append(_conv(cin, n))
        self.dec2 = nn.ModuleList(_conv(n, n) for _ in range(levels))
        self.out = _conv(n, 3)
        _xavier_init(self)

    def _has_skip(self, j: int) -> bool:
        return j < self.levels - 1 or self.full_res_skip

    def forward(self, coarse: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(torch.cat([coarse, source], 1)))  # (B, n, H, W)
        skips = []
        for i in range(self.levels):
            x = F.relu(self.enc2[i](F.relu(self.enc1[i](x))))  # (B, n*(i+1), H/2^i, W/2^i)
            skips.append(x)
            if i < self.levels - 1:
                x = F.relu(self.down[i](x))  # (B, n*(i+1), H/2^(i+1), W/2^(i+1))
        for j in range(self.levels):
            if self._has_skip(j):
                x = torch.cat([x, skips[self.levels - 1 - j]], 1)
            x = F.relu(self.dec2[j](F.relu(self.dec1[j](x))))  # (B, n, ., .)
            if j < self.levels - 1:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.out(x)  # (B, 3, H, W) difference map, linear


class Discriminator(nn.Module):
    """DCGAN discriminator: 5x5 stride-2 convs 64 (no BN), 128, 256, 512 (, 512) + BN, LeakyReLU
    0.2, linear logit.

    "triplet" form scores single 3-ch images (PG2 code); "conditional" scores (source, image)
    6-ch pairs (PG2 paper). Every conv has a bias, also before BatchNorm, as the public code
    (4,324,737 parameters at 128x64, 10,896,257 at 256x256); convs and the linear layer start
    uniform with std 0.02 (+-0.02*sqrt(3)), biases at zero. BatchNorm normalises with batch
    statistics in every mode (no running statistics are kept: nothing for a CUDA graph to mutate).
    """

    def __init__(self, arch: Arch):
        super().__init__()
        in_ch = 6 if arch.disc == "conditional" else 3
        if arch.disc not in ("triplet", "conditional"):
            raise ValueError(f"unknown discriminator form {arch.disc!r}")
        f = 2**arch.disc_layers
        if arch.height % f or arch.width % f:
            raise ValueError(
                f"resolution {arch.height}x{arch.width} is not divisible by 2^{arch.disc_layers} "
                f"= {f} for the discriminator's {arch.disc_layers} stride-2 convs"
            )
        layers: list[nn.Module] = []
        c = arch.disc_channels
        for i in range(arch.disc_layers):
            cout = c * 2 ** min(i, 3)  # 64, 128, 256, 512, 512
            layers.append(nn.Conv2d(in_ch, cout, 5, stride=2, padding=2, bias=True))
            if i > 0:
                layers.append(nn.BatchNorm2d(cout, track_running_stats=False))
            layers.append(nn.LeakyReLU(0.2))
            in_ch = cout
        self.features = nn.Sequential(*layers)
        self.logit = nn.Linear(in_ch * (arch.height // f) * (arch.width // f), 1)
        _uniform_init(self, D_INIT_STD)

    def forward(self, image: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        if source is not None:
            image = torch.cat([source, image], 1)  # conditional form: (B, 6, H, W)
        return self.logit(self.features(image).flatten(1)).squeeze(1)  # (B,) logits


def build_models(arch: Arch) -> tuple[G1, G2, Discriminator]:
    """The three networks of PG2 for one architecture."""
    return G1(arch), G2(arch), Discriminator(arch)


def param_counts(arch: Arch) -> dict[str, int]:
    """Parameters of G1, G2 and D for `arch`, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        nets = build_models(arch)
    return {
        k: sum(p.numel() for p in m.parameters())
        for k, m in zip(("g1", "g2", "disc"), nets, strict=True)
    }
