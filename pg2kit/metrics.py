"""Evaluation metrics on uint8 RGB images (N, H, W, 3): PG2 SSIM, PATN-family SSIM and mask-SSIM.

Both SSIM variants of SPEC section 7; name the one you report. Masks are the *target* masks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SSIM_VARIANTS", "mask_ssim", "ssim", "ssim_one"]

SSIM_VARIANTS = ("pg2", "patn")


def ssim_one(generated: np.ndarray, real: np.ndarray, variant: str = "pg2") -> float:
    """SSIM of one (H, W, 3) uint8 image pair.

    pg2: scikit-image 2017 defaults: 7x7 uniform window, data range 255, K1 0.01, K2 0.03,
    sample covariance. patn: Gaussian window sigma 1.5, population covariance, data range =
    max - min of the generated image (as the PATN/GFLA evaluation scripts do).
    """
    from skimage.metrics import structural_similarity

    g = np.asarray(generated)
    r = np.asarray(real)
    if g.shape != r.shape or g.ndim != 3 or g.shape[-1] != 3:
        raise ValueError(f"expected two (H, W, 3) images of equal shape, got {g.shape}, {r.shape}")
    if variant == "pg2":
        return float(
            structural_similarity(
                g, r, win_size=7, data_range=255, K1=0.01, K2=0.03,
                use_sample_covariance=True, gaussian_weights=False, channel_axis=-1,
            )
        )  # fmt: skip
    if variant == "patn":
        g = g.astype(np.float64)
        data_range = float(g.max() - g.min())
        if data_range == 0:
            data_range = 1.0  # a flat generated image; avoids 0/0 (its SSIM is then ~0 or 1)
        return float(
            structural_similarity(
                g, r.astype(np.float64), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=data_range, channel_axis=-1,
            )
        )  # fmt: skip
    raise ValueError(f"unknown SSIM variant {variant!r}; choose one of {SSIM_VARIANTS}")


def ssim(generated: np.ndarray, real: np.ndarray, variant: str = "pg2") -> float:
    """Mean SSIM over N image pairs, (N, H, W, 3) uint8 each."""
    g, r = np.asarray(generated), np.asarray(real)
    if g.shape != r.shape or g.ndim != 4:
        raise ValueError(
            f"expected two (N, H, W, 3) arrays of equal shape, got {g.shape}, {r.shape}"
        )
    return float(np.mean([ssim_one(a, b, variant) for a, b in zip(g, r, strict=True)]))


def mask_ssim(
    generated: np.ndarray, real: np.ndarray, target_mask: np.ndarray, variant: str = "pg2"
) -> float:
    """Mean SSIM after multiplying both images by the TARGET body mask (N, H, W) of 0/1.

    PG2's released script used the source mask by mistake (SPEC 7); pass the target's.
    """
    g, r = np.asarray(generated), np.asarray(real)
    m = np.asarray(target_mask)
    if m.shape != g.shape[:3]:
        raise ValueError(f"mask shape {m.shape} does not match images {g.shape}")
    m = (m > 0).astype(np.uint8)[..., None]  # (N, H, W, 1) of 0/1
    return ssim(g * m, r * m, variant)
