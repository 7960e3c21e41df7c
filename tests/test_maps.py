"""Tests of pg2kit.maps: hand-computed cases pinning SPEC section 3, fast vs reference, torch."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pg2kit import maps

sys.path.insert(0, str(Path(__file__).parent))
import _reference_maps as ref  # noqa: E402


def blank() -> np.ndarray:
    return np.full((18, 2), -1.0, np.float32)


def random_keypoints(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """(n, 18, 2) float32: ~15% missing, some on/over the border, some integer or half-integer."""
    kp = np.stack(
        [rng.uniform(-6, width + 6, (n, 18)), rng.uniform(-6, height + 6, (n, 18))], axis=-1
    )
    kind = rng.integers(0, 4, (n, 18))
    kp[kind == 1] = np.round(kp[kind == 1])  # integer pixels, as imported CSV keypoints are
    kp[kind == 2] = np.floor(kp[kind == 2]) + 0.5  # exact halves: rounding ties
    kp[rng.random((n, 18)) < 0.15] = -1
    kp[0, 3] = (width - 1, height - 1)  # the corner pixel
    kp[0, 4] = (0, 0)
    kp[0, 5] = (width * 6.0, height * 0.5)  # far outside but present: long segments
    kp[-1] = -1  # one image with nobody in it
    return kp.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# hand-computed cases


def test_disk_has_49_pixels_and_rounds_to_nearest_pixel():
    kp = blank()
    kp[0] = (10.5, 20.49)  # nearest pixel (11, 20): halves round up
    m = maps.pose_map_disk(kp, 64, 48)
    assert m.shape == (64, 48, 18) and m.dtype == np.uint8
    assert m[..., 0].sum() == 49
    assert m[20, 11, 0] == 1 and m[20, 15, 0] == 1 and m[20, 16, 0] == 0
    assert m[16, 11, 0] == 1 and m[15, 11, 0] == 0 and m[17, 14, 0] == 0  # 3^2 + 3^2 > 16
    assert m[..., 1:].sum() == 0


def test_disk_clipped_at_corner_and_missing_channels_empty():
    kp = blank()
    kp[2] = (0, 0)
    kp[3] = (-0.2, 5)  # a negative coordinate counts as missing
    kp[4] = (5, np.nan)
    m = maps.pose_map_disk(kp, 32, 32)
    assert m[..., 2].sum() == 17  # the quarter disk with dx, dy >= 0: 5 + 4 + 4 + 3 + 1
    assert m[..., 3].sum() == 0 and m[..., 4].sum() == 0


def test_disk_radius_changes_area():
    kp = blank()
    kp[0] = (20, 20)
    assert maps.pose_map_disk(kp, 40, 40, radius=1)[..., 0].sum() == 5
    assert maps.pose_map_disk(kp, 40, 40, radius=0)[..., 0].sum() == 1


def test_gaussian_values():
    kp = blank()
    kp[0] = (10, 20)
    kp[1] = (3.5, 7.25)
    g = maps.pose_map_gaussian(kp, 40, 30, sigma=6.0)
    assert g.dtype == np.float32 and g.shape == (40, 30, 18)
    assert g[20, 10, 0] == pytest.approx(1.0)
    assert g[20, 16, 0] == pytest.approx(math.exp(-0.5), rel=1e-6)  # distance = sigma
    assert g[26, 10, 0] == pytest.approx(math.exp(-0.5), rel=1e-6)
    assert g[7, 3, 1] == pytest.approx(math.exp(-(0.25 + 0.0625) / 72), rel=1e-6)
    assert g[..., 2:].max() == 0
    assert g.max() <= 1


def test_mask_interior_points_count():
    kp = blank()
    kp[1], kp[2] = (10, 20), (30, 20)  # segment (1, 2), length 20: N = 5 -> 4 interior points
    pts = maps.mask_points(kp, radius=4)
    assert pts.tolist() == [[10, 20], [30, 20], [14, 20], [18, 20], [22, 20], [26, 20]]
    kp[2] = (17.9, 20)  # length 7.9: N = 1 -> ends only
    assert len(maps.mask_points(kp, radius=4)) == 2
    kp[2] = (18, 20)  # length 8: N = 2 -> the midpoint
    assert maps.mask_points(kp, radius=4).tolist() == [[10, 20], [18, 20], [14, 20]]
    kp[2] = (10, 40)  # radius 7: N = int(20 / 7) = 2
    assert maps.mask_points(kp, radius=7).tolist() == [[10, 20], [10, 40], [10, 30]]


def test_mask_without_interior_points_would_have_a_gap():
    kp = blank()
    kp[1], kp[2] = (10, 20), (40, 20)  # 30 px apart: the two end disks alone leave a gap
    m = maps.body_mask(kp, 48, 64)
    assert m[20, 10:41].all() and m[16:25, 15:36].all()
    assert m[20, 5] == 0 and m[20, 45] == 0 and m[14, 25] == 0


def test_keypoint_without_partner_stamps_nothing():
    kp = blank()
    kp[0] = (20, 20)  # nose alone: no segment has both ends present
    assert maps.body_mask(kp, 40, 40).sum() == 0
    kp[4] = (30, 30)  # wrist: its partner (3) is missing
    assert maps.body_mask(kp, 40, 40).sum() == 0
    kp[14] = (24, 20)  # (0, 14) now present
    assert maps.body_mask(kp, 40, 40).sum() > 0
    assert maps.body_mask(kp, 40, 40)[30, 30] == 0


def test_closing_fills_one_pixel_gap():
    kp = blank()
    # right arm at x = 10 and left arm at x = 20: disks cover columns 6-14 and 16-24
    kp[2], kp[3] = (10, 10), (10, 50)
    kp[5], kp[6] = (20, 10), (20, 50)
    assert maps.pose_map_disk(kp, 64, 40)[30, 15].sum() == 0
    m = maps.body_mask(kp, 64, 40)
    assert m[30, 6:25].all()  # column 15 filled by the closing
    assert m[30, 5] == 0 and m[30, 25] == 0


def test_no_hole_filling_of_a_ring():
    kp = blank()
    # face pentagon 0-14-16-17-15-0 on a circle of radius 30 (neck missing): a ring
    for j, angle in zip(
        (0, 14, 16, 17, 15), np.linspace(0, 2 * np.pi, 5, endpoint=False), strict=True
    ):
        kp[j] = (50 + 30 * np.cos(angle), 50 + 30 * np.sin(angle))
    m = maps.body_mask(kp, 100, 100)
    assert m[50, 50] == 0 and m[50, 35] == 0  # inside the ring stays empty
    assert m[50, 80] == 1  # on the ring (nose)
    assert m.sum() < 0.4 * math.pi * 34 * 34


def test_closing_keeps_border_pixels():
    kp = blank()
    kp[1], kp[2] = (0, 0), (0, 30)  # a segment along the left edge of the frame
    m = maps.body_mask(kp, 40, 40)
    assert m[0:31, 0].all()  # out-of-frame pixels do not erode the border


def test_eval_mask_rectangle_and_disks():
    kp = blank()
    kp[1], kp[2] = (10, 20), (30, 20)
    m = maps.eval_mask(kp, 48, 48)
    assert m[16:25, 10:31].all()  # rectangle of half-width 4, inclusive
    assert m[15, 20] == 0 and m[25, 20] == 0
    assert m[20, 6] == 1 and m[20, 5] == 0  # end disk
    assert m.sum() == 21 * 9 + 2 * 20  # rectangle + the outer halves of the two end disks
    kp[0] = (40, 40)  # a lone joint still gets its disk in the evaluation mask
    assert maps.eval_mask(kp, 48, 48)[40, 40] == 1


def test_eval_mask_diagonal_segment():
    kp = blank()
    kp[8], kp[9] = (10, 10), (40, 40)
    m = maps.eval_mask(kp, 50, 50)
    assert m[25, 25] == 1 and m[28, 23] == 1  # distance 3.5 from the line
    assert m[28, 22] == 0  # distance 4.24: a 45-degree staircase edge the closing cannot fill
    np.testing.assert_array_equal(m, ref.eval_mask(kp, 50, 50))


def test_batched_shapes_out_and_errors():
    rng = np.random.default_rng(1)
    kp = random_keypoints(rng, 5, 32, 16)
    out = np.full((5, 32, 16, 18), 7, np.uint8)
    assert maps.pose_maps(kp, 32, 16, out=out) is out
    np.testing.assert_array_equal(out, maps.pose_maps(kp, 32, 16))
    assert maps.body_masks(kp, 32, 16).shape == (5, 32, 16)
    assert maps.pose_maps(kp[:0], 32, 16).shape == (0, 32, 16, 18)
    assert maps.body_masks(kp[:0], 32, 16).shape == (0, 32, 16)
    with pytest.raises(ValueError):
        maps.pose_maps(kp, 32, 16, kind="square")
    with pytest.raises(ValueError):
        maps.pose_maps(kp[0], 32, 16)
    with pytest.raises(ValueError):
        maps.body_masks(kp, 32, 16, radius=0)
    with pytest.raises(ValueError):
        maps.pose_maps(kp, 32, 16, out=np.zeros((5, 32, 16, 18), np.float32))


def test_batched_closing_in_chunks(monkeypatch):
    kp = random_keypoints(np.random.default_rng(12), 7, 40, 30)
    whole = maps.body_masks(kp, 40, 30)
    monkeypatch.setattr(maps, "_CLOSE_CHUNK_PX", 3 * 42 * 30)  # three images per cv2 call
    np.testing.assert_array_equal(maps.body_masks(kp, 40, 30), whole)
    for i in range(7):
        np.testing.assert_array_equal(whole[i], ref.body_mask(kp[i], 40, 30))


def test_huge_coordinates_are_cheap():
    kp = blank()
    kp[1], kp[2] = (10, 10), (1e12, 10)  # present but absurdly far: ~2.5e11 interior points
    kp[5] = (1e30, 1e30)
    m = maps.body_mask(kp, 32, 32)
    assert m[10, 10:32].all() and m[20, 10] == 0
    assert maps.pose_map_disk(kp, 32, 32)[..., 5].sum() == 0


# --------------------------------------------------------------------------------------------------
# fast vs reference


@pytest.mark.parametrize("height,width,n", [(128, 64, 6), (256, 256, 3)])
def test_disk_maps_match_reference(height, width, n):
    kp = random_keypoints(np.random.default_rng(height), n, height, width)
    fast = maps.pose_maps(kp, height, width, kind="disk")
    for i in range(n):
        np.testing.assert_array_equal(fast[i], ref.pose_map_disk(kp[i], height, width))
    np.testing.assert_array_equal(fast[0], maps.pose_map_disk(kp[0], height, width))


@pytest.mark.parametrize("height,width,n", [(128, 64, 4), (256, 256, 2)])
def test_body_masks_match_reference(height, width, n):
    kp = random_keypoints(np.random.default_rng(height + 1), n, height, width)
    fast = maps.body_masks(kp, height, width)
    for i in range(n):
        np.testing.assert_array_equal(fast[i], ref.body_mask(kp[i], height, width))
    radius7 = maps.body_masks(kp[:1], height, width, radius=7)[0]
    np.testing.assert_array_equal(radius7, ref.body_mask(kp[0], height, width, radius=7))


def test_body_masks_match_reference_for_segments_leaving_the_frame():
    # one end inside, the other up to 10 frames away in any direction: the fast version only
    # generates the interior points near the frame, which must not lose any visible pixel
    rng = np.random.default_rng(11)
    kp = np.full((24, 18, 2), -1.0, np.float32)
    kp[:, 1] = rng.uniform(0, 48, (24, 2))
    angle = rng.uniform(0, 2 * np.pi, 24)
    dist = rng.uniform(30, 480, 24)
    kp[:, 8, 0] = kp[:, 1, 0] + dist * np.cos(angle)
    kp[:, 8, 1] = kp[:, 1, 1] + dist * np.sin(angle)
    kp[:, 8] = np.abs(kp[:, 8])  # a negative coordinate would make it missing: reflect instead
    fast = maps.body_masks(kp, 48, 48, radius=3)
    for i in range(len(kp)):
        np.testing.assert_array_equal(fast[i], ref.body_mask(kp[i], 48, 48, radius=3))


def test_mask_points_match_reference():
    kp = random_keypoints(np.random.default_rng(5), 4, 128, 64)
    for i in range(4):
        got = [tuple(p) for p in maps.mask_points(kp[i]).tolist()]
        want = ref.segment_points(kp[i])  # lists a shared end once per segment
        assert set(got) == set(want)
        assert len(got) == len(set(got))


@pytest.mark.parametrize("height,width,n", [(128, 64, 3), (256, 256, 2)])
def test_eval_masks_match_reference(height, width, n):
    kp = random_keypoints(np.random.default_rng(height + 2), n, height, width)
    fast = maps.eval_masks(kp, height, width)
    for i in range(n):
        np.testing.assert_array_equal(fast[i], ref.eval_mask(kp[i], height, width))


def test_gaussian_maps_match_reference_128x64():
    kp = random_keypoints(np.random.default_rng(7), 2, 128, 64)
    fast = maps.pose_maps(kp, 128, 64, kind="gaussian")
    for i in range(2):
        np.testing.assert_allclose(
            fast[i], ref.pose_map_gaussian(kp[i], 128, 64), atol=1e-7, rtol=1e-5
        )


@pytest.mark.slow
def test_gaussian_maps_match_reference_256x256():
    kp = random_keypoints(np.random.default_rng(8), 2, 256, 256)
    fast = maps.pose_maps(kp, 256, 256, kind="gaussian", sigma=4.0)
    for i in range(2):
        want = ref.pose_map_gaussian(kp[i], 256, 256, sigma=4.0)
        np.testing.assert_allclose(fast[i], want, atol=1e-7, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# torch


@pytest.mark.parametrize("height,width", [(128, 64), (256, 256)])
def test_torch_matches_numpy(height, width):
    torch = pytest.importorskip("torch")
    kp = random_keypoints(np.random.default_rng(9), 4, height, width)
    disk = maps.pose_maps_torch(torch.from_numpy(kp), height, width, kind="disk")
    assert disk.dtype == torch.float32 and disk.shape == (4, 18, height, width)
    np.testing.assert_array_equal(
        disk.numpy(), maps.pose_maps(kp, height, width).transpose(0, 3, 1, 2).astype(np.float32)
    )
    gauss = maps.pose_maps_torch(torch.from_numpy(kp), height, width, kind="gaussian")
    np.testing.assert_allclose(
        gauss.numpy(),
        maps.pose_maps(kp, height, width, kind="gaussian").transpose(0, 3, 1, 2),
        atol=1e-6,
        rtol=1e-5,
    )
    single = maps.pose_maps_torch(torch.from_numpy(kp[0]), height, width, radius=7)
    np.testing.assert_array_equal(
        single.numpy(), maps.pose_map_disk(kp[0], height, width, radius=7).transpose(2, 0, 1)
    )


@pytest.mark.gpu
def test_torch_on_cuda_matches_numpy():
    import torch

    kp = random_keypoints(np.random.default_rng(10), 8, 256, 256)
    disk = maps.pose_maps_torch(torch.from_numpy(kp).cuda(), 256, 256)
    assert disk.device.type == "cuda"
    np.testing.assert_array_equal(
        disk.cpu().numpy(), maps.pose_maps(kp, 256, 256).transpose(0, 3, 1, 2)
    )
    gauss = maps.pose_maps_torch(torch.from_numpy(kp).cuda(), 256, 256, kind="gaussian")
    np.testing.assert_allclose(
        gauss.cpu().numpy(),
        maps.pose_maps(kp, 256, 256, kind="gaussian").transpose(0, 3, 1, 2),
        atol=1e-6,
        rtol=1e-5,
    )
