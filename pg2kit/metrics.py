"""Per-pair evaluation metrics on uint8 RGB images (N, H, W, 3): SSIM (two conventions),
mask-SSIM, L1 and PSNR, batched and vectorised (torch on the CPU), scikit-image's numbers.

SSIM conventions (SPEC section 7; name the one you report):
  pg2   scikit-image 2017 defaults on uint8: 7x7 uniform window, data range 255, K1 0.01,
        K2 0.03, sample covariance (PG2, Def-GAN).
  patn  Gaussian window sigma 1.5 (11x11, truncate 3.5), population covariance, data range =
        max - min of the generated image (PATN, GFLA and the FID-era papers that reuse its script).
Both average the SSIM map over the valid interior (the border of half a window is cropped, as
scikit-image does) and over the three channels, then over images.
"""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = [
    "SSIM_VARIANTS",
    "apply_mask",
    "feature_stats",
    "frechet_distance",
    "inception_score",
    "l1_batch",
    "mask_ssim",
    "psnr_batch",
    "ssim",
    "ssim_batch",
    "ssim_batch_multi",
    "ssim_one",
]

SSIM_VARIANTS = ("pg2", "patn")
_K1, _K2 = 0.01, 0.03
_CHUNK = 64  # images per vectorised step (~25 MB per float64 map at 128x64)


def ssim_one(generated: np.ndarray, real: np.ndarray, variant: str = "pg2") -> float:
    """SSIM of one (H, W, 3) uint8 pair through scikit-image itself (the slow reference)."""
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
        data_range = _patn_range(float(g.max() - g.min()))
        return float(
            structural_similarity(
                g, r.astype(np.float64), gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False, data_range=data_range, channel_axis=-1,
            )
        )  # fmt: skip
    raise ValueError(f"unknown SSIM variant {variant!r}; choose one of {SSIM_VARIANTS}")


def _patn_range(r: float) -> float:
    # a flat generated image has range 0: taken as 1 to avoid 0/0 (its SSIM is then ~0 or 1)
    return r if r > 0 else 1.0


def _check_pair(g: np.ndarray, r: np.ndarray) -> None:
    if g.shape != r.shape or g.ndim != 4 or g.shape[-1] != 3:
        raise ValueError(
            f"expected two (N, H, W, 3) arrays of equal shape, got {g.shape}, {r.shape}"
        )


def _window(variant: str) -> np.ndarray:
    """1-D weights of the separable SSIM window, float64 summing to 1."""
    if variant == "pg2":
        return np.full(7, 1 / 7)
    if variant == "patn":
        sigma, truncate = 1.5, 3.5  # scipy.ndimage.gaussian_filter, as scikit-image calls it
        radius = int(truncate * sigma + 0.5)  # 5 -> an 11-tap window
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        w = np.exp(-0.5 * x * x / (sigma * sigma))
        return w / w.sum()
    raise ValueError(f"unknown SSIM variant {variant!r}; choose one of {SSIM_VARIANTS}")


def ssim_batch(generated: np.ndarray, real: np.ndarray, variant: str = "pg2") -> np.ndarray:
    """Per-pair SSIM (N,) float64 of (N, H, W, 3) uint8 arrays; agrees with `ssim_one` per pair."""
    return ssim_batch_multi(generated, real, (variant,))[variant]


def ssim_batch_multi(
    generated: np.ndarray, real: np.ndarray, variants=SSIM_VARIANTS, threads: int | None = None
) -> dict[str, np.ndarray]:
    """Per-pair SSIM (N,) float64 in each of `variants`, sharing the image products.

    A chunk of images is filtered as one tall image with OpenCV (the rows that mix neighbouring
    images lie in the border that scikit-image crops away), then the SSIM map is averaged over
    the valid interior and the channels. All in float64: pg2's 7x7 box sums of uint8 data and
    their products are exact integers, patn's Gaussian sums are ~1e-12 from scikit-image
    (float32 was tried: up to 1e-5 off on white backgrounds, far more on flat images).
    Chunks run on `threads` threads (default: one per CPU; NumPy and OpenCV release the GIL).
    """
    import cv2

    g, r = np.asarray(generated), np.asarray(real)
    _check_pair(g, r)
    if g.dtype != np.uint8 or r.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {g.dtype} and {r.dtype}")
    n, h, w, _ = g.shape
    for v in variants:
        k = len(_window(v))
        if h < k or w < k:
            raise ValueError(f"images of {h}x{w} are smaller than the {k}x{k} SSIM window")
    out = {v: np.empty(n, np.float64) for v in variants}

    def chunk(s: int) -> None:  # fills out[v][s : s + _CHUNK]: disjoint slices per thread
        gb, rb = g[s : s + _CHUNK], r[s : s + _CHUNK]
        b = len(gb)
        x = gb.astype(np.float64).reshape(b * h, w, 3)  # the chunk as one tall 3-channel image
        y = rb.astype(np.float64).reshape(b * h, w, 3)
        maps = (x, y, x * x, y * y, x * y)
        for v in variants:
            taps = _window(v)
            k = len(taps)
            pad = k // 2
            if v == "pg2":  # unnormalised box: exact integer window sums
                f = [cv2.boxFilter(m, -1, (k, k), normalize=False, borderType=cv2.BORDER_REFLECT)
                     for m in maps]  # fmt: skip
                smap = _ssim_box(*f, k)
            else:
                f = [cv2.sepFilter2D(m, -1, taps, taps, borderType=cv2.BORDER_REFLECT)
                     for m in maps]  # fmt: skip
                span = (gb.reshape(b, -1).max(1) - gb.reshape(b, -1).min(1)).astype(np.float64)
                span[span == 0] = 1.0  # a flat generated image: range taken as 1
                smap = _ssim_gauss(*f, np.repeat(span, h))
            # the map is computed on the whole tall image (contiguous: fast); keep the interior
            inner = smap.reshape(b, h, w, 3)[:, pad : h - pad, pad : w - pad]
            out[v][s : s + b] = inner.reshape(b, -1).mean(1, dtype=np.float64)

    starts = range(0, n, _CHUNK)
    threads = min(len(starts), threads or os.cpu_count() or 1)
    if threads <= 1:
        for s in starts:
            chunk(s)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(chunk, starts))
    return out


def _ssim_box(sx, sy, sxx, syy, sxy, k: int) -> np.ndarray:
    """pg2 SSIM map from exact k x k window sums (float64 holding integers); overwrites them."""
    npx = k * k
    c1 = (_K1 * 255) ** 2 * npx * npx
    c2 = (_K2 * 255) ** 2 * npx * (npx - 1)
    # npx * (npx - 1) * (co)variance = npx * Sab - Sa Sb: exact integers
    sxx += syy
    sxx *= npx  # npx (Sxx + Syy)
    sxy *= npx
    num = np.multiply(sx, sy)  # Sx Sy
    sxy -= num  # npx Sxy - Sx Sy
    sxy *= 2
    sxy += c2  # second factor of the numerator
    num *= 2
    num += c1
    num *= sxy
    np.multiply(sx, sx, out=sx)
    np.multiply(sy, sy, out=sy)
    sx += sy  # Sx^2 + Sy^2
    sxx -= sx  # npx (Sxx + Syy) - Sx^2 - Sy^2
    sxx += c2
    sx += c1
    sx *= sxx
    num /= sx
    return num


def _ssim_gauss(ux, uy, uxx, uyy, uxy, data_range) -> np.ndarray:
    """patn SSIM map from Gaussian window means (float64, tall image); data_range (rows,);
    overwrites its inputs."""
    c1 = ((_K1 * data_range) ** 2)[:, None, None]
    c2 = ((_K2 * data_range) ** 2)[:, None, None]
    uxx += uyy
    t = np.multiply(ux, ux)
    uxx -= t
    np.multiply(uy, uy, out=t)
    uxx -= t  # vx + vy
    uxx += c2
    np.multiply(ux, uy, out=t)
    uxy -= t  # vxy
    uxy *= 2
    uxy += c2
    num = np.multiply(ux, uy)
    num *= 2
    num += c1
    num *= uxy
    np.multiply(ux, ux, out=ux)
    np.multiply(uy, uy, out=uy)
    ux += uy
    ux += c1
    ux *= uxx
    num /= ux
    return num


def ssim(generated: np.ndarray, real: np.ndarray, variant: str = "pg2") -> float:
    """Mean SSIM over N image pairs, (N, H, W, 3) uint8 each."""
    return float(np.mean(ssim_batch(generated, real, variant)))


def apply_mask(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """images (N, H, W, 3) uint8 times a 0/1 (or 0/255) mask (N, H, W): pixels outside -> 0."""
    images, m = np.asarray(images), np.asarray(mask)
    if m.shape != images.shape[:3]:
        raise ValueError(f"mask shape {m.shape} does not match images {images.shape}")
    return images * (m > 0).astype(np.uint8)[..., None]


def mask_ssim(
    generated: np.ndarray, real: np.ndarray, mask: np.ndarray, variant: str = "pg2"
) -> float:
    """Mean SSIM after multiplying both images by a body mask (N, H, W) of 0/1.

    Pass the TARGET's mask (the correct choice); PG2's published figures used the SOURCE's
    (SPEC 7), which `pg2kit evaluate --mask-from source` reproduces.
    """
    g, r = np.asarray(generated), np.asarray(real)
    _check_pair(g, r)
    return ssim(apply_mask(g, mask), apply_mask(r, mask), variant)


def l1_batch(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-pair mean absolute difference (N,) in [0, 1] (images scaled to [0, 1])."""
    g, r = np.asarray(generated), np.asarray(real)
    _check_pair(g, r)
    d = np.abs(g.astype(np.int16) - r.astype(np.int16))
    return d.reshape(len(g), -1).mean(1) / 255.0


def psnr_batch(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-pair PSNR in dB (N,) with data range 255 (identical pairs give inf)."""
    g, r = np.asarray(generated), np.asarray(real)
    _check_pair(g, r)
    d = g.astype(np.int32) - r.astype(np.int32)
    mse = (d * d).reshape(len(g), -1).mean(1)
    with np.errstate(divide="ignore"):
        return np.where(mse > 0, 10 * np.log10(255.0**2 / np.maximum(mse, 1e-300)), math.inf)


# ---------------------------------------------------------------- IS, FID (Inception features)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) from (N, 1008) logits, mean and std over `splits` equal
    consecutive splits (images beyond a multiple of `splits` are dropped, as the original code's
    integer division does). Returns (mean, std)."""
    z = np.asarray(logits, np.float64)
    if z.ndim != 2 or len(z) < splits:
        raise ValueError(f"need (N >= {splits}, classes) logits, got shape {z.shape}")
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    size = len(p) // splits
    scores = []
    for i in range(splits):
        part = p[i * size : (i + 1) * size]
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-30) - np.log(py + 1e-30))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of (N, D) features (float64, N - 1 normalisation)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), as FID computes it (scipy sqrtm; a tiny
    diagonal offset when the product is singular; the imaginary residue is dropped)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    s1, s2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular products are expected
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            off = np.eye(len(s1)) * 1e-6
            covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
