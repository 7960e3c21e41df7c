"""G1 / G2 / D: output shapes, parameter counts of the public PG2 code (SPEC 5) and init."""

import pytest
import torch

from pg2kit.models import (
    G1,
    G2,
    Arch,
    Discriminator,
    check_resolution,
    default_repeat,
    param_counts,
)

MARKET = Arch(height=128, width=64, channels=128, repeat=5, g2_full_res_skip=False, disc_layers=4)
FASHION = Arch(height=256, width=256, channels=128, repeat=6, g2_full_res_skip=True, disc_layers=5)


def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def g1_params(n, r, h, w, z=64, cin=21):
    """Count from the description: stem, R residual levels, stride-2 downs, FC, decoder, output."""
    hb, wb = h // 2 ** (r - 1), w // 2 ** (r - 1)
    total = conv(3, cin, n)
    for i in range(r):
        total += 2 * conv(3, n * (i + 1), n * (i + 1))
        if i < r - 1:
            total += conv(3, n * (i + 1), n * (i + 2))
    total += hb * wb * n * r * z + z  # flatten -> 64
    total += z * hb * wb * n + hb * wb * n  # 64 -> hb x wb x n
    x = n  # channels of the decoder input before the concat
    for j in range(r):
        width = x + n * (r - j)  # concat skip R-1-j, which has n*(R-j) channels
        total += 2 * conv(3, width, width)
        if j < r - 1:
            x = n * (r - j - 1)
            total += conv(1, width, x)
    return total + conv(3, width, 3)


def g2_params(n, r, full_res_skip, cin=6):
    """SPEC 5: stride-2 convs keep the width, no 1x1 conv after upsampling, no FC."""
    levels = r - 2
    total = conv(3, cin, n)
    for i in range(levels):
        total += conv(3, n * max(i, 1), n * (i + 1)) + conv(3, n * (i + 1), n * (i + 1))
        if i < levels - 1:
            total += conv(3, n * (i + 1), n * (i + 1))
    x = n * levels
    for j in range(levels):
        has_skip = j < levels - 1 or full_res_skip
        total += conv(3, x + (n * (levels - j) if has_skip else 0), n) + conv(3, n, n)
        x = n
    return total + conv(3, n, 3)


def d_params(h, w, layers, cin=3):
    """Every conv with a bias (also before BN, as the public code), BN weight + bias."""
    total, c = conv(5, cin, 64), 64
    for i in range(1, layers):
        cout = min(64 * 2**i, 512)
        total += conv(5, c, cout) + 2 * cout
        c = cout
    f = 2**layers
    return total + c * (h // f) * (w // f) + 1


# parameter counts of the public PG2 TensorFlow code (SPEC 5 / issue 9)
PUBLIC_COUNTS = {
    "market": {"g1": 70_795_075, "g2": 6_058_883, "disc": 4_324_737},
    "deepfashion": {"g1": 122_103_235, "g2": 12_696_067, "disc": 10_896_257},
}


@pytest.mark.parametrize("arch,name", [(MARKET, "market"), (FASHION, "deepfashion")])
def test_parameter_counts_match_the_public_code(arch, name):
    assert param_counts(arch) == PUBLIC_COUNTS[name]


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_spec_figures():
    # SPEC 5: Market flattens 8x4x640 = 20,480 into the FC; R = 5 / 6
    assert default_repeat(128) == 5 and default_repeat(256) == 6
    assert check_resolution(128, 64, 5) == (8, 4)
    assert check_resolution(256, 256, 6) == (8, 8)
    with torch.device("meta"):
        g1 = G1(MARKET)
    assert g1.fc_in.in_features == 20_480 and g1.fc_in.out_features == 64
    assert g1.fc_out.out_features == 8 * 4 * 128


@pytest.mark.parametrize("arch", [MARKET, FASHION], ids=["market", "deepfashion"])
def test_full_presets_shapes_and_counts(arch):
    h, w = arch.height, arch.width
    with torch.device("meta"):  # shapes and counts without allocating ~500 MB of weights
        g1, g2 = G1(arch), G2(arch)
        d_trip = Discriminator(arch)
        d_cond = Discriminator(Arch(**{**arch.to_dict(), "disc": "conditional"}))
        src = torch.empty(2, 3, h, w)
        pose = torch.empty(2, 18, h, w)
        coarse = g1(src, pose)
        diff = g2(coarse, src)
        assert d_trip(coarse).shape == (2,)
        assert d_cond(coarse, src).shape == (2,)
    assert coarse.shape == (2, 3, h, w) and diff.shape == (2, 3, h, w)
    assert count(g1) == g1_params(128, arch.repeat, h, w)
    assert count(g2) == g2_params(128, arch.repeat, arch.g2_full_res_skip)
    assert count(d_trip) == d_params(h, w, arch.disc_layers)
    assert count(d_cond) == d_params(h, w, arch.disc_layers, cin=6)


def test_market_g2_has_no_full_resolution_skip():
    with torch.device("meta"):
        no_skip = G2(MARKET)
        skip = G2(Arch(**{**MARKET.to_dict(), "g2_full_res_skip": True}))
    # last decoder level's first conv: input n (no skip) vs n + n (skip from level 0)
    assert no_skip.dec1[-1].in_channels == 128
    assert skip.dec1[-1].in_channels == 256


def test_small_forward_backward_and_init():
    torch.manual_seed(0)
    arch = Arch(height=32, width=16, channels=8, repeat=3, disc_layers=3, disc_channels=8)
    g1, g2, d = G1(arch), G2(arch), Discriminator(arch)
    src = torch.rand(2, 3, 32, 16) * 2 - 1
    pose = torch.rand(2, 18, 32, 16).round() * 2 - 1
    coarse = g1(src, pose)
    refined = coarse + g2(coarse, src)
    d(refined).sum().backward()
    assert refined.shape == (2, 3, 32, 16)
    assert all(p.grad is not None for p in g1.parameters())
    # Xavier-uniform: |w| <= sqrt(6 / (fan_in + fan_out)), biases start at zero
    w = g1.stem.weight
    bound = (6 / (21 * 9 + 8 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert torch.count_nonzero(g1.stem.bias) == 0
    # outputs are linear (no tanh): values outside [-1, 1] must be reachable
    with torch.no_grad():
        g1.out.bias.fill_(3.0)
        assert g1(src, pose).max() > 1


def test_discriminator_init_is_uniform_std_002():
    torch.manual_seed(0)
    d = Discriminator(MARKET)
    bound = 0.02 * 3**0.5  # 0.0346
    for name, p in d.named_parameters():
        if name.endswith("weight") and p.dim() > 1:  # convs and the linear logit
            assert p.abs().max() <= bound and p.abs().max() > 0.99 * bound, name
            if p.numel() > 10_000:
                assert abs(p.std().item() - 0.02) < 0.001, name
        elif p.dim() == 1 and "features" in name and p.numel() and name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
    assert all(m.bias is not None for m in d.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("hw,r", [((128, 60), 5), ((96, 48), 6), ((32, 16), 2)])
def test_unsupported_resolutions(hw, r):
    with pytest.raises(ValueError):
        check_resolution(*hw, r)


def test_discriminator_batchnorm_uses_batch_statistics_in_every_mode():
    torch.manual_seed(0)
    arch = Arch(height=32, width=16, channels=8, repeat=3, disc_layers=3, disc_channels=8)
    d = Discriminator(arch)
    x = torch.randn(4, 3, 32, 16)
    a = d.train()(x)
    b = d.eval()(x)
    torch.testing.assert_close(a, b)
    assert not any("running" in k for k in d.state_dict())  # nothing mutated per forward
