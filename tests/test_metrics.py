"""SSIM variants and mask-SSIM on cases worked out by hand."""

import numpy as np
import pytest

from pg2kit.metrics import mask_ssim, ssim


def flat(value, n=1, h=16, w=16):
    return np.full((n, h, w, 3), value, np.uint8)


def test_identical_images_score_one():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, a, "patn") == pytest.approx(1.0)


def test_flat_images_luminance_term():
    # flat images: every local variance is 0, so SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)  # 0.92309...
    assert ssim(flat(100), flat(150)) == pytest.approx(expected, rel=1e-6)
    # PATN: data range = max - min of the generated image; 0 here, taken as 1 -> C1 = 1e-4
    c1 = 0.01**2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)
    assert ssim(flat(100), flat(150), "patn") == pytest.approx(expected, rel=1e-6)


def test_variants_differ_on_noise():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (2, 32, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    pg2, patn = ssim(a, b), ssim(a, b, "patn")
    assert 0 < pg2 < 1 and 0 < patn < 1 and abs(pg2 - patn) > 1e-3


def test_mask_ssim_uses_the_given_target_mask():
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    gen = real.copy()
    gen[:, 16:] = rng.integers(0, 256, (1, 16, 32, 3), dtype=np.uint8)  # differs in the bottom half
    top = np.zeros((1, 32, 32), np.uint8)
    top[:, :16] = 1
    bottom = 1 - top
    assert ssim(gen, real) < 0.9
    assert mask_ssim(gen, real, top) == pytest.approx(1.0)  # differences masked out
    assert mask_ssim(gen, real, bottom) < 0.9
    assert mask_ssim(gen, real, top * 255) == pytest.approx(1.0)  # 0/255 masks work too


def test_bad_shapes():
    with pytest.raises(ValueError):
        ssim(flat(1), flat(1, h=8))
    with pytest.raises(ValueError):
        mask_ssim(flat(1), flat(1), np.ones((1, 8, 8)))
    with pytest.raises(ValueError):
        ssim(flat(1), flat(1), "other")
