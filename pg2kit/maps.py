"""PG2 pose maps and body masks (SPEC section 3) from COCO-18 keypoints (x, y), missing = (-1, -1).

Writes numpy (H, W, 18) maps / (H, W) masks, batched (B, ...) versions for the pipeline, and torch
(B, 18, H, W) maps rendered on the keypoints' device for the trainer.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from pg2kit.keypoints import MASK_SEGMENTS, NUM_KEYPOINTS

if TYPE_CHECKING:
    import torch

MAP_KINDS = ("disk", "gaussian")

_SEG_A = np.array([a for a, _ in MASK_SEGMENTS], np.intp)
_SEG_B = np.array([b for _, b in MASK_SEGMENTS], np.intp)
# (23, 18) incidence: which keypoints are the ends of each segment
_SEG_ENDS = np.zeros((len(MASK_SEGMENTS), NUM_KEYPOINTS), np.float32)
_SEG_ENDS[np.arange(len(MASK_SEGMENTS)), _SEG_A] = 1
_SEG_ENDS[np.arange(len(MASK_SEGMENTS)), _SEG_B] = 1
_CLOSE_KERNEL = np.ones((5, 5), np.uint8)  # the 5x5 square of the PG2 closing
_CLOSE_CHUNK_PX = 1 << 26  # pixels per cv2 call of the batched closing, far below cv2's int limits
_EYE = np.eye(NUM_KEYPOINTS, dtype=np.float32)
# Gaussian factors below this are flushed to 0: their products would be float32 subnormals, which
# are ~100x slower to compute; the error is < 1.1e-19 absolute.
_GAUSS_FLUSH = 1.1e-19


# --------------------------------------------------------------------------------------------------
# small shared pieces


def _check_frame(height: int, width: int) -> tuple[int, int]:
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return height, width


def _as_batch(keypoints, batched: bool) -> np.ndarray:
    """Keypoints as float64 (B, 18, 2); float32 -> float64 is exact."""
    kp = np.asarray(keypoints, dtype=np.float64)
    want = 3 if batched else 2
    if kp.ndim != want or kp.shape[-2:] != (NUM_KEYPOINTS, 2):
        shape = "(B, 18, 2)" if batched else "(18, 2)"
        raise ValueError(f"keypoints must have shape {shape}, got {kp.shape}")
    return kp if batched else kp[None]


def _present(kp: np.ndarray) -> np.ndarray:
    """(B, 18) bool: both coordinates finite and >= 0 (NaN and inf count as missing)."""
    return np.isfinite(kp).all(-1) & (kp >= 0).all(-1)


def _round_half_up(v: np.ndarray) -> np.ndarray:
    """Exact floor(v + 0.5): v - floor(v) is exact in floating point, v + 0.5 is not always."""
    f = np.floor(v)
    return f + (v - f >= 0.5)


@lru_cache(maxsize=16)
def _disk_offsets(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column offsets (K,) of all integer (dy, dx) with dy^2 + dx^2 <= radius^2."""
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dy * dy + dx * dx <= r * r
    return dy[inside].astype(np.intp), dx[inside].astype(np.intp)


def _check_radius(radius: int, minimum: int) -> int:
    if int(radius) != radius or radius < minimum:
        raise ValueError(f"radius must be an integer >= {minimum}, got {radius}")
    return int(radius)


def _scatter_disks(flat, item, chan, x, y, height, width, radius, item_rows, channels) -> None:
    """Set to 1 the radius-`radius` disks around the nearest pixels of points (x, y).

    `flat` is the raveled (items, item_rows, width, channels) uint8 buffer; item/chan (P,) say
    where each point goes. Pixels outside the height x width frame are clipped.
    """
    cx = _round_half_up(x)
    cy = _round_half_up(y)
    # only disks that can reach the frame; this also keeps huge coordinates out of the int cast
    keep = (cx >= -radius) & (cx < width + radius) & (cy >= -radius) & (cy < height + radius)
    if not keep.all():
        cx, cy, item = cx[keep], cy[keep], item[keep]
        chan = chan[keep] if isinstance(chan, np.ndarray) else chan
    cx = cx.astype(np.intp)
    cy = cy.astype(np.intp)
    dy, dx = _disk_offsets(radius)
    base = ((item * item_rows + cy) * width + cx) * channels + chan  # (P,) flat index of centres
    off = (dy * width + dx) * channels  # (K,) flat offsets of the disk pixels
    inner = (cx >= radius) & (cx < width - radius) & (cy >= radius) & (cy < height - radius)
    if inner.all():
        flat[(base[:, None] + off).ravel()] = 1
        return
    flat[(base[inner, None] + off).ravel()] = 1
    edge = ~inner  # disks crossing the border: check every pixel
    rows = cy[edge, None] + dy
    cols = cx[edge, None] + dx
    ok = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat[(base[edge, None] + off)[ok]] = 1


def _close(buf: np.ndarray, height: int) -> np.ndarray:
    """5x5 closing of each (height, W) image in a (B, height + 2, W) buffer whose 2 extra rows are 0.

    Pixels outside an image take part in neither the dilation nor the erosion (what skimage's
    reflect mode and cv2's default border both give for a 5x5 square). The images are processed
    as one tall cv2 image: the 2 zero rows between images are neutral for the dilation and,
    set to 1, for the erosion, so no image sees its neighbour.
    """
    import cv2

    b, rows, width = buf.shape
    out = np.empty_like(buf)
    step = max(1, _CLOSE_CHUNK_PX // (rows * width))
    for s in range(0, b, step):
        part = buf[s : s + step]
        dilated = cv2.dilate(part.reshape(-1, width), _CLOSE_KERNEL)
        dilated.reshape(part.shape)[:, height:] = 1
        cv2.erode(dilated, _CLOSE_KERNEL, dst=out[s : s + step].reshape(-1, width))
    return out


def _out_buffer(out, shape, dtype) -> np.ndarray:
    if out is None:
        return np.zeros(shape, dtype)
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {np.dtype(dtype)} array of shape {shape}")
    out.fill(0)
    return out


# --------------------------------------------------------------------------------------------------
# pose maps


def pose_maps(
    keypoints: np.ndarray,
    height: int,
    width: int,
    kind: str = "disk",
    radius: int = 4,
    sigma: float = 6.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Pose maps (B, H, W, 18) of keypoints (B, 18, 2): disks uint8 0/1 or Gaussians float32.

    disk: every integer offset (dy, dx) with dy^2 + dx^2 <= radius^2 around the nearest pixel
    floor(v + 0.5) of a present keypoint, clipped to the frame (49 px for radius 4).
    gaussian: exp(-d^2 / (2 sigma^2)), d = distance from pixel (col, row) to the keypoint.
    A missing keypoint (a coordinate < 0, NaN or inf) leaves its channel 0. `out`, if given, is
    a preallocated C-contiguous array of the result's shape and dtype that is overwritten.
    """
    height, width = _check_frame(height, width)
    kp = _as_batch(keypoints, batched=True)
    pres = _present(kp)
    n = kp.shape[0]
    if kind == "disk":
        radius = _check_radius(radius, 0)
        out = _out_buffer(out, (n, height, width, NUM_KEYPOINTS), np.uint8)
        item, chan = np.nonzero(pres)
        pts = kp[item, chan]
        _scatter_disks(
            out.reshape(-1), item, chan, pts[:, 0], pts[:, 1], height, width, radius, height,
            NUM_KEYPOINTS,
        )  # fmt: skip
        return out
    if kind == "gaussian":
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        out = _out_buffer(out, (n, height, width, NUM_KEYPOINTS), np.float32)
        # separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2)
        kp0 = np.where(pres[..., None], kp, 0.0)
        gx = _gauss_1d(np.arange(width), kp0[..., 0], sigma, pres)  # (B, W, 18)
        gy = _gauss_1d(np.arange(height), kp0[..., 1], sigma, pres)  # (B, H, 18)
        # out[b, h, w, c] = gy[b, h, c] * gx[b, w, c] as one matmul per image against a
        # block-diagonal (18, W * 18) matrix: each sum has one nonzero term, so the result is the
        # plain float32 product, but BLAS writes the channels-last rows ~2x faster than broadcasting
        spread = _EYE[None, :, None, :] * gx[:, None, :, :]  # (B, 18, W, 18)
        np.matmul(
            gy, spread.reshape(n, NUM_KEYPOINTS, width * NUM_KEYPOINTS),
            out=out.reshape(n, height, width * NUM_KEYPOINTS),
        )  # fmt: skip
        return out
    raise ValueError(f"kind must be one of {MAP_KINDS}, got {kind!r}")


def _gauss_1d(pixels: np.ndarray, centre: np.ndarray, sigma: float, pres: np.ndarray) -> np.ndarray:
    """1-D factors (B, L, 18) float32 of the separable Gaussian; 0 for missing keypoints."""
    d = pixels[None, :, None] - centre[:, None, :]
    g = np.exp(d * d * (-0.5 / (sigma * sigma))).astype(np.float32)
    g[g < _GAUSS_FLUSH] = 0
    g *= pres[:, None, :]
    return g


def pose_map_disk(keypoints: np.ndarray, height: int, width: int, radius: int = 4) -> np.ndarray:
    """PG2 pose map (H, W, 18) uint8 0/1 of one person's keypoints (18, 2); see `pose_maps`."""
    return pose_maps(_as_batch(keypoints, False), height, width, "disk", radius=radius)[0]


def pose_map_gaussian(
    keypoints: np.ndarray, height: int, width: int, sigma: float = 6.0
) -> np.ndarray:
    """PATN/GFLA pose map (H, W, 18) float32 in [0, 1] of keypoints (18, 2); see `pose_maps`."""
    return pose_maps(_as_batch(keypoints, False), height, width, "gaussian", sigma=sigma)[0]


# --------------------------------------------------------------------------------------------------
# body masks


def _interior_points(kp, pres, radius, box=None):
    """Interior stamp points of the mask segments: (item (P,), x (P,), y (P,)).

    A segment a->b whose ends are both present, of length L = sqrt(dx^2 + dy^2), N = int(L / r),
    gets the points a + t (b - a), t = k / N, k = 1 .. N-1 (none when N <= 1). With `box`
    (x0, y0, x1, y1) only k whose points may lie in the box are generated (a superset, with a
    margin of one k each side), so a keypoint far outside the frame cannot cost memory or time.
    """
    kp0 = np.where(pres[..., None], kp, 0.0)  # keep NaN/inf of missing points out of the sums
    a = kp0[:, _SEG_A]  # (B, 23, 2)
    d = kp0[:, _SEG_B] - a
    valid = pres[:, _SEG_A] & pres[:, _SEG_B]
    length = np.sqrt(d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1])
    n = np.where(valid, np.floor(length / radius), 0.0)  # N as float64 (no int overflow)
    k_lo = np.ones_like(n)
    k_hi = n - 1
    if box is not None:
        t0 = np.zeros_like(n)
        t1 = np.ones_like(n)
        for axis, lo, hi in ((0, box[0], box[2]), (1, box[1], box[3])):
            p, q = a[..., axis], d[..., axis]
            flat = q == 0  # parallel to this axis: all or nothing of the segment is in the slab
            q = np.where(flat, 1.0, q)
            ta, tb = (lo - p) / q, (hi - p) / q
            miss = flat & ((p < lo) | (p > hi))
            t0 = np.maximum(t0, np.where(flat, 0.0, np.minimum(ta, tb)))
            t1 = np.minimum(t1, np.where(flat, np.where(miss, -1.0, 1.0), np.maximum(ta, tb)))
        k_lo = np.maximum(k_lo, np.floor(t0 * n) - 1)
        k_hi = np.minimum(k_hi, np.ceil(t1 * n) + 1)
    count = np.maximum(k_hi - k_lo + 1, 0).astype(np.intp).ravel()
    seg = np.repeat(np.arange(count.size), count)  # flat (item, segment) index of each point
    first = np.cumsum(count) - count
    k = k_lo.ravel()[seg] + (np.arange(seg.size) - first[seg])
    t = k / n.ravel()[seg]
    a2, d2 = a.reshape(-1, 2), d.reshape(-1, 2)
    x = a2[seg, 0] + t * d2[seg, 0]
    y = a2[seg, 1] + t * d2[seg, 1]
    return seg // len(MASK_SEGMENTS), x, y


def _mask_stamps(kp, pres):
    """Keypoints that end at least one segment with both ends present: (item, x, y)."""
    valid = (pres[:, _SEG_A] & pres[:, _SEG_B]).astype(np.float32)
    ends = (valid @ _SEG_ENDS) > 0  # (B, 18)
    item, joint = np.nonzero(ends)
    return item, kp[item, joint, 0], kp[item, joint, 1]


def mask_points(keypoints: np.ndarray, radius: int = 4) -> np.ndarray:
    """Centres (P, 2) float64 (x, y), before rounding, of all disks the PG2 body mask stamps.

    Segment ends first (each present keypoint that ends a segment with both ends present, in
    keypoint order), then the interior points of each segment in MASK_SEGMENTS order.
    """
    radius = _check_radius(radius, 1)
    kp = _as_batch(keypoints, batched=False)
    pres = _present(kp)
    _, ex, ey = _mask_stamps(kp, pres)
    _, ix, iy = _interior_points(kp, pres, radius)
    return np.stack([np.concatenate([ex, ix]), np.concatenate([ey, iy])], axis=1)


def body_masks(
    keypoints: np.ndarray,
    height: int,
    width: int,
    radius: int = 4,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """PG2 body masks (B, H, W) uint8 0/1 of keypoints (B, 18, 2).

    For each of the 23 MASK_SEGMENTS with both ends present: radius-r disks (as in the disk pose
    map) at both ends and at the N - 1 interior points (`mask_points`); union; then a 5x5 square
    dilation and a 5x5 erosion, over pixels inside the frame only (out-of-frame pixels count as
    neither set nor unset, like cv2's MORPH_CLOSE default border). No hole filling. A keypoint
    with no present segment partner stamps nothing.
    """
    height, width = _check_frame(height, width)
    radius = _check_radius(radius, 1)
    kp = _as_batch(keypoints, batched=True)
    pres = _present(kp)
    n = kp.shape[0]
    out = _out_buffer(out, (n, height, width), np.uint8)
    if n == 0:
        return out
    buf = np.zeros((n, height + 2, width), np.uint8)  # 2 spare rows per image for `_close`
    flat = buf.reshape(-1)
    margin = radius + 1
    box = (-margin, -margin, width - 1 + margin, height - 1 + margin)
    for item, x, y in (_mask_stamps(kp, pres), _interior_points(kp, pres, radius, box)):
        _scatter_disks(flat, item, 0, x, y, height, width, radius, height + 2, 1)
    out[:] = _close(buf, height)[:, :height]
    return out


def body_mask(keypoints: np.ndarray, height: int, width: int, radius: int = 4) -> np.ndarray:
    """PG2 body mask (H, W) uint8 0/1 of one person's keypoints (18, 2); see `body_masks`."""
    return body_masks(_as_batch(keypoints, False), height, width, radius=radius)[0]


def eval_mask(
    keypoints: np.ndarray, height: int, width: int, half_width: float = 4.0, radius: float = 4.0
) -> np.ndarray:
    """Def-GAN/PATN evaluation mask (H, W) uint8 0/1 of the *target* keypoints (18, 2).

    Each of the 23 segments with both ends present and nonzero length is a filled rectangle:
    pixels p with 0 <= (p - a).(b - a) <= |b - a|^2 and distance to the line a-b <= half_width.
    Every present keypoint adds the pixels within `radius` of its (float) position. Then the
    same 5x5 closing as `body_masks`. Pixel p = (col, row); boundaries are inclusive.
    """
    height, width = _check_frame(height, width)
    kp = _as_batch(keypoints, batched=False)[0]
    pres = _present(kp[None])[0]
    buf = np.zeros((1, height + 2, width), np.uint8)
    mask = buf[0, :height]
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)
    hw2 = half_width * half_width
    for ia, ib in MASK_SEGMENTS:
        if not (pres[ia] and pres[ib]):
            continue
        (ax, ay), (bx, by) = kp[ia], kp[ib]
        dx, dy = bx - ax, by - ay
        l2 = dx * dx + dy * dy
        if l2 == 0:
            continue
        win = _window(min(ax, bx) - half_width, max(ax, bx) + half_width, width)
        win_r = _window(min(ay, by) - half_width, max(ay, by) + half_width, height)
        if win is None or win_r is None:
            continue
        px = cols[win][None, :] - ax  # (1, w)
        py = rows[win_r][:, None] - ay  # (h, 1)
        dot = px * dx + py * dy
        cross = px * dy - py * dx
        inside = (dot >= 0) & (dot <= l2) & (cross * cross <= hw2 * l2)
        mask[win_r, win] |= inside
    r2 = radius * radius
    for j in np.nonzero(pres)[0]:
        x, y = kp[j]
        win = _window(x - radius, x + radius, width)
        win_r = _window(y - radius, y + radius, height)
        if win is None or win_r is None:
            continue
        px = cols[win][None, :] - x
        py = rows[win_r][:, None] - y
        mask[win_r, win] |= px * px + py * py <= r2
    return _close(buf, height)[0, :height].copy()


def _window(lo: float, hi: float, size: int) -> slice | None:
    """Integer pixels in [lo, hi] clipped to [0, size); None if empty."""
    start = max(0, math.ceil(lo))
    stop = min(size, math.floor(hi) + 1)
    return slice(start, stop) if start < stop else None


def eval_masks(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Evaluation masks (B, H, W) uint8 of keypoints (B, 18, 2); see `eval_mask`."""
    kp = _as_batch(keypoints, batched=True)
    out = np.zeros((kp.shape[0], height, width), np.uint8)
    for i in range(kp.shape[0]):
        out[i] = eval_mask(kp[i], height, width)
    return out


# --------------------------------------------------------------------------------------------------
# torch


def pose_maps_torch(
    keypoints: torch.Tensor,
    height: int,
    width: int,
    kind: str = "disk",
    radius: int = 4,
    sigma: float = 6.0,
) -> torch.Tensor:
    """Pose maps (B, 18, H, W) float32 on the keypoints' device from keypoints (B, 18, 2).

    Same definition as `pose_maps` (channels first): disks equal it exactly, Gaussians to float32
    rounding. Keypoints (18, 2) give (18, H, W).
    """
    import torch

    height, width = _check_frame(height, width)
    single = keypoints.dim() == 2
    kp = keypoints[None] if single else keypoints
    if kp.dim() != 3 or tuple(kp.shape[1:]) != (NUM_KEYPOINTS, 2):
        raise ValueError(f"keypoints must have shape (B, 18, 2), got {tuple(keypoints.shape)}")
    if not kp.is_floating_point():
        kp = kp.to(torch.float32)
    pres = torch.isfinite(kp).all(-1) & (kp >= 0).all(-1)  # (B, 18)
    kp = torch.where(pres[..., None], kp, torch.zeros_like(kp))
    dev = kp.device
    if kind == "disk":
        radius = _check_radius(radius, 0)
        f = torch.floor(kp)
        c = f + (kp - f >= 0.5).to(kp.dtype)  # exact floor(v + 0.5)
        # clamping changes no pixel (a disk further out cannot reach the frame) and keeps ints small
        lim = float(max(height, width) + radius + 1)
        c = c.clamp(-lim, lim).to(torch.int32)
        dx = torch.arange(width, device=dev, dtype=torch.int32) - c[..., 0:1]  # (B, 18, W)
        dy = torch.arange(height, device=dev, dtype=torch.int32) - c[..., 1:2]  # (B, 18, H)
        # dx^2 + dy^2 <= r^2 as dx^2 <= r^2 - dy^2: one comparison into bool, no int (B,18,H,W)
        room = radius * radius - dy * dy
        room = torch.where(pres[..., None], room, torch.full_like(room, -1))  # missing: empty
        maps = ((dx * dx)[..., None, :] <= room[..., :, None]).to(torch.float32)
    elif kind == "gaussian":
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        kp32 = kp.to(torch.float32)
        scale = -0.5 / (sigma * sigma)
        gx = torch.exp((torch.arange(width, device=dev) - kp32[..., 0:1]).square() * scale)
        gy = torch.exp((torch.arange(height, device=dev) - kp32[..., 1:2]).square() * scale)
        gx = torch.where(gx < _GAUSS_FLUSH, torch.zeros_like(gx), gx) * pres[..., None]
        gy = torch.where(gy < _GAUSS_FLUSH, torch.zeros_like(gy), gy)
        maps = gy[..., :, None] * gx[..., None, :]
    else:
        raise ValueError(f"kind must be one of {MAP_KINDS}, got {kind!r}")
    return maps[0] if single else maps
