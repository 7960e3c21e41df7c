"""Tests of pg2kit.estimators: BlazePose -> COCO-18 mapping, view geometry, fusion, pickling."""

import pickle

import numpy as np
import pytest

from pg2kit.estimators import (
    MediaPipeEstimator,
    View,
    apply_offsets,
    blazepose_to_coco18,
    finish_pose,
    fuse_runs,
    landmarks_to_image,
    make_estimator,
    render_view,
    run_to_coco18,
)
from pg2kit.keypoints import BLAZEPOSE_TO_COCO18


def fake_landmarks(vis: float = 0.9) -> np.ndarray:
    """33 BlazePose landmarks (x, y, visibility): landmark i at (10 + i, 50 + 2 i)."""
    lm = np.zeros((33, 3), np.float32)
    lm[:, 0] = 10 + np.arange(33)
    lm[:, 1] = 50 + 2 * np.arange(33)
    lm[:, 2] = vis
    return lm


def test_mapping_follows_spec_indices_and_neck_midpoint():
    lm = fake_landmarks()
    kp, scores = blazepose_to_coco18(lm, width=200, height=200)
    for k, b in enumerate(BLAZEPOSE_TO_COCO18):
        if b is not None:
            assert tuple(kp[k]) == (10 + b, 50 + 2 * b)
    # neck = midpoint of BlazePose 11 (left shoulder) and 12 (right shoulder)
    np.testing.assert_allclose(kp[1], [21.5, 73.0])
    assert kp.dtype == np.float32 and scores.dtype == np.float32
    assert (scores > 0).all()


def test_mapping_missing_rules_threshold_and_out_of_frame():
    lm = fake_landmarks()
    lm[12, 2] = 0.2  # right shoulder barely visible -> missing, and so the neck
    lm[0, 2] = 0.55  # nose: present with a global 0.5 threshold, missing with 0.6 for the nose
    lm[16] = (-5.0, 60.0, 0.99)  # right wrist left of the image
    lm[28] = (30.0, 130.0, 0.99)  # right ankle 1 px below a 130-row image (last row is 129)
    kp, scores = blazepose_to_coco18(lm, width=100, height=130)
    for k in (1, 2, 4, 10):
        assert tuple(kp[k]) == (-1.0, -1.0) and scores[k] == 0
    assert scores[0] == pytest.approx(0.55)
    thr = np.full(18, 0.5)
    thr[0] = 0.6
    kp, scores = blazepose_to_coco18(lm, 100, 130, visibility_threshold=thr)
    assert tuple(kp[0]) == (-1.0, -1.0) and scores[0] == 0
    # a margin keeps points just outside the frame, clamped onto the border
    kp, _ = blazepose_to_coco18(lm, 100, 130, margin=2.0)
    assert tuple(kp[10]) == (30.0, 129.0)
    assert tuple(kp[4]) == (-1.0, -1.0)


def test_run_to_coco18_swaps_sides_of_mirrored_runs():
    lm = fake_landmarks()
    xy, vis = run_to_coco18(lm, flipped=False)
    xy_f, _ = run_to_coco18(lm, flipped=True)
    np.testing.assert_allclose(xy_f[2], xy[5])  # right shoulder <- left shoulder label
    np.testing.assert_allclose(xy_f[16], xy[17])
    np.testing.assert_allclose(xy_f[0], xy[0])
    np.testing.assert_allclose(xy_f[1], xy[1])
    assert vis.shape == (18,)


@pytest.mark.parametrize(
    "canvas, flip, shift", [(1.0, False, (0, 0)), (2.0, True, (0, 0)), (1.5, False, (0.5, -1.0))]
)
@pytest.mark.parametrize("pad", ["constant", "edge", "reflect"])
def test_view_geometry_maps_canvas_points_back_to_pixels(canvas, flip, shift, pad):
    view = View(canvas, flip, pad, shift)
    h, w = 128, 64
    image = np.zeros((h, w, 3), np.uint8)
    image[100, 20] = 255  # a marker pixel at (x, y) = (20, 100)
    canvas, (s, x0, y0) = render_view(image, view, scale=2.0)
    side = canvas.shape[0]
    assert canvas.shape == (side, side, 3) and side >= 256
    assert side == max(round(view.canvas * 256), 256)
    # where the marker's centre lands on the canvas, as MediaPipe would report it (normalised)
    xc, yc = (20 + 0.5) * s + x0, (100 + 0.5) * s + y0
    if view.flip:
        xc = side - xc
    raw = np.tile([[xc / side, yc / side, 1.0]], (33, 1)).astype(np.float32)
    back = landmarks_to_image(raw, side, view, (s, x0, y0))
    np.testing.assert_allclose(back[0, :2], [20, 100], atol=1e-3)
    # and the marker really is there in the rendered canvas
    xi, yi = int(xc), int(yc)
    assert canvas[yi - 1 : yi + 1, xi - 1 : xi + 1, 0].min() > 100


def test_fuse_runs_drops_outlier_runs():
    base = np.stack([np.arange(18) * 3.0, 40 + np.arange(18) * 5.0], 1).astype(np.float32)
    base[1] = (base[2] + base[5]) / 2  # fusion keeps the neck at the shoulder midpoint
    vis = np.full(18, 0.9, np.float32)
    runs = [(base + 1, vis), (base - 1, vis), (base + 80, vis)]
    xy, v, kept = fuse_runs(runs, agree=0.25)
    assert kept == 2
    np.testing.assert_allclose(xy, base, atol=1e-4)
    xy_all, _, kept_all = fuse_runs(runs, agree=100.0)
    assert kept_all == 3 and not np.allclose(xy_all, base, atol=1)


def test_finish_pose_thresholds_and_neck_rule():
    est = MediaPipeEstimator(visibility=0.5, offsets=((0.0, 0.0),) * 18, margin=0.0)
    xy = np.stack([10 + np.arange(18.0), 20 + np.arange(18.0)], 1).astype(np.float32)
    vis = np.full(18, 0.9, np.float32)
    vis[5] = 0.3  # left shoulder missing -> neck missing too
    xy[9] = (70.0, 30.0)  # right knee outside a 64-wide image
    kp, scores = finish_pose([(xy, vis)], est.config, width=64, height=128)
    assert (kp[[1, 5, 9]] == -1).all() and (scores[[1, 5, 9]] == 0).all()
    np.testing.assert_allclose(kp[3], xy[3])
    assert scores[3] == pytest.approx(0.9)


def test_offsets_follow_the_person_when_mirrored():
    xy = np.zeros((18, 2), np.float32)
    xy[2], xy[5], xy[8], xy[11] = (10, 10), (30, 10), (12, 50), (28, 50)  # torso length 40
    off = np.zeros((18, 2), np.float32)
    off[8] = (0.1, 0.05)  # right hip: 4 px towards the person's left, 2 px down
    moved = apply_offsets(xy, off)
    np.testing.assert_allclose(moved[8], [16, 52])
    mirrored = xy.copy()
    mirrored[:, 0] = 100 - mirrored[:, 0]  # person now faces the other way: left is image-left
    np.testing.assert_allclose(apply_offsets(mirrored, off)[8], [100 - 12 - 4, 52])


def test_estimator_pickles_its_configuration_only():
    est = MediaPipeEstimator(
        visibility=0.3, min_detection_confidence=0.4, views_small=[(2.0, True)]
    )
    clone = pickle.loads(pickle.dumps(est))
    assert clone.config == est.config
    assert clone.config.visibility == (0.3,) * 18
    assert clone.config.views_small == (View(2.0, True),)
    assert clone._pose is None
    assert clone.name == "mediapipe"


def test_make_estimator():
    assert isinstance(make_estimator("mediapipe", agree=0.5), MediaPipeEstimator)
    with pytest.raises(ValueError):
        make_estimator("openpose")
    with pytest.raises(ValueError):
        MediaPipeEstimator(views_small=[(2.0, False, "wrap")])


def test_estimator_finds_nobody_in_blank_and_noise_images():
    rng = np.random.default_rng(0)
    images = [
        np.full((128, 64, 3), 127, np.uint8),
        rng.integers(0, 256, (128, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (300, 700, 3), dtype=np.uint8),
        np.full((1500, 2000, 3), 30, np.uint8),  # larger than max_side: downscaled, not upscaled
        np.full((128, 64), 200, np.uint8),  # greyscale is accepted
    ]
    with make_estimator() as est:
        assert est.version.startswith("mediapipe-0.10")
        for image in images:
            kp, scores = est(image)
            assert kp.shape == (18, 2) and kp.dtype == np.float32
            assert scores.shape == (18,) and scores.dtype == np.float32
            assert (kp == -1).all() and (scores == 0).all()
    assert est._pose is None  # closed by the context manager


def test_estimator_rejects_bad_images_and_options():
    est = MediaPipeEstimator()
    with pytest.raises(ValueError):
        est(np.zeros((64, 32, 3), np.float32))
    with pytest.raises(ValueError):
        est(np.zeros((0, 32, 3), np.uint8))
    with pytest.raises(ValueError):
        MediaPipeEstimator(fusion="max")
    with pytest.raises(ValueError):
        MediaPipeEstimator(visibility=(0.5, 0.5))
    assert est._pose is None  # rejected before MediaPipe was ever loaded


class FakePose:
    """Stands in for the MediaPipe graph: counts calls; finds a person when `finds` is true."""

    def __init__(self, finds: bool):
        self.finds, self.calls = finds, 0

    def process(self, canvas):
        from types import SimpleNamespace

        self.calls += 1
        if not self.finds:
            return SimpleNamespace(pose_landmarks=None)
        points = [SimpleNamespace(x=0.5, y=0.3 + 0.01 * i, visibility=0.9) for i in range(33)]
        return SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=points))


@pytest.mark.parametrize("shape, small", [((128, 64, 3), True), ((256, 256, 3), False)])
def test_fallback_views_run_only_when_nothing_is_found(shape, small):
    est = MediaPipeEstimator()
    cfg = est.config
    main, fallback = (
        (cfg.views_small, cfg.fallback_small) if small else (cfg.views_large, cfg.fallback_large)
    )
    est._pose = FakePose(finds=True)
    runs = est.run_views(np.zeros(shape, np.uint8))
    assert est._pose.calls == len(main) == len(runs)
    est._pose = FakePose(finds=False)
    assert est.run_views(np.zeros(shape, np.uint8)) == []
    assert est._pose.calls == len(main) + len(fallback)
    # every run was mapped back inside the original image, at the centre column
    for xy, vis in runs:
        assert np.allclose(xy[:, 0], shape[1] / 2 - 0.5, atol=1e-3)
        assert (vis == 0.9).all()
