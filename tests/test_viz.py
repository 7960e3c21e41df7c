"""Tests of pg2kit.viz: shapes and dtypes, colours of drawn pixels, grid arithmetic, PNG writing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pg2kit import viz
from pg2kit.keypoints import OPENPOSE_COLORS, SKELETON_LIMBS


def blank_kp() -> np.ndarray:
    return np.full((18, 2), -1.0, np.float32)


def test_draw_skeleton_limb_and_joint_colours():
    image = np.zeros((64, 64, 3), np.uint8)
    kp = blank_kp()
    kp[1], kp[2] = (10, 32), (50, 32)  # limb 0 = (1, 2), horizontal
    out = viz.draw_skeleton(image, kp, thickness=3)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert tuple(out[32, 30]) == OPENPOSE_COLORS[0]  # middle of limb 0
    assert tuple(out[32, 10]) == OPENPOSE_COLORS[1]  # joint 1's dot on top
    assert tuple(out[32, 50]) == OPENPOSE_COLORS[2]
    assert out[10].sum() == 0 and out[54].sum() == 0  # nothing far from the limb
    assert image.sum() == 0  # the input is not modified


def test_draw_skeleton_skips_missing():
    image = np.full((40, 40, 3), 7, np.uint8)
    kp = blank_kp()
    np.testing.assert_array_equal(viz.draw_skeleton(image, kp), image)
    kp[3] = (20, 20)  # elbow alone: a dot, no limb
    kp[4] = (-1, -1)
    out = viz.draw_skeleton(image, kp, thickness=1)
    changed = np.argwhere((out != image).any(-1))
    assert len(changed) > 0
    assert np.abs(changed - (20, 20)).max() <= 3  # only around the elbow


def test_draw_skeleton_scale_enlarges_and_keeps_pixel_centres():
    image = np.zeros((32, 16, 3), np.uint8)
    image[5, 3] = 200
    kp = blank_kp()
    kp[8], kp[9] = (4, 10), (4, 26)  # limb 7 = (8, 9), vertical
    out = viz.draw_skeleton(image, kp, scale=4, thickness=3)
    assert out.shape == (128, 64, 3)
    assert (out[20:24, 12:16] == 200).all()  # pixel (3, 5) became a 4x4 block
    x = 4 * 4 + 1.5  # centre of the block of column 4
    limb = SKELETON_LIMBS.index((8, 9))
    assert tuple(out[70, int(x)]) == OPENPOSE_COLORS[limb]
    with pytest.raises(ValueError):
        viz.draw_skeleton(image, kp, scale=0)


def test_colorize_pose_map():
    pm = np.zeros((8, 6, 18), np.uint8)
    pm[1, 2, 3] = 1
    pm[4, 4, 0] = pm[4, 4, 12] = 1  # red (255, 0, 0) and blue (0, 0, 255): max per component
    rgb = viz.colorize_pose_map(pm)
    assert rgb.shape == (8, 6, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 2]) == OPENPOSE_COLORS[3]
    assert tuple(rgb[4, 4]) == (255, 0, 255)
    assert rgb[0, 0].sum() == 0
    gauss = np.zeros((8, 6, 18), np.float32)
    gauss[2, 2, 0] = 0.5
    assert tuple(viz.colorize_pose_map(gauss)[2, 2]) == (128, 0, 0)


def test_mask_pictures():
    mask = np.zeros((5, 4), np.uint8)
    mask[1, 2] = 1
    rgb = viz.mask_to_rgb(mask)
    assert rgb.shape == (5, 4, 3) and tuple(rgb[1, 2]) == (255, 255, 255) and rgb[0, 0].sum() == 0
    image = np.full((5, 4, 3), 100, np.uint8)
    over = viz.overlay_mask(image, mask, alpha=0.5)
    assert tuple(over[1, 2]) == (178, 50, 50)  # 0.5 * 100 + 0.5 * (255, 0, 0), rounded
    assert tuple(over[0, 0]) == (100, 100, 100)
    with pytest.raises(ValueError):
        viz.overlay_mask(image, mask[:4], 0.5)


def test_grid_size_arithmetic():
    a = np.zeros((128, 64, 3), np.uint8)
    b = np.zeros((256, 256, 3), np.uint8)  # tallest: every cell scaled to 256 high
    c = np.zeros((64, 64), np.uint8)  # grey, 64 -> 256 high, 256 wide
    g = viz.grid([[a, b], [c, None]], pad=3, bg=255)
    # columns: max(128, 256) and 256 wide; rows 256 high; pad around and between
    assert g.shape == (3 + 2 * (256 + 3), 3 + 256 + 3 + 256 + 3, 3)
    assert g.dtype == np.uint8
    assert (g[3:259, 3:131] == 0).all()  # a, nearest-enlarged to 256x128
    assert (g[3:259, 131:262] == 255).all()  # rest of column 0 and the pad stay background
    assert (g[262:518, 262:518] == 255).all()  # the empty cell


def test_grid_labels_add_margins():
    a = np.zeros((20, 10, 3), np.uint8)
    plain = viz.grid([[a, a], [a, a]], pad=2)
    labelled = viz.grid([[a, a], [a, a]], pad=2, labels=["one", "two"], col_labels=["x", "y"])
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    left = labelled.shape[1] - plain.shape[1]
    assert (labelled[:, :left] < 255).any()  # some ink in the label margin
    with pytest.raises(ValueError):
        viz.grid([[a], [a]], labels=["only one"])


def test_save_png_roundtrip(tmp_path):
    image = np.zeros((6, 5, 3), np.uint8)
    image[..., 0] = 200  # red in RGB
    path = viz.save_png(tmp_path / "sub" / "x.png", image)
    assert path.exists() and list(path.parent.iterdir()) == [path]  # no temporary left behind
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, image)
    with pytest.raises(ValueError):
        viz.save_png(tmp_path / "y.png", image.astype(np.float32))
