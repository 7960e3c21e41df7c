"""Tests of the built-in synthetic dataset; also writes a contact sheet to the temp folder."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from pg2kit.datasets.synthetic import LABELS, SyntheticSample, generate, render_sample
from pg2kit.keypoints import OPENPOSE_COLORS, SKELETON_LIMBS

NAME_RE = re.compile(r"^(\d{4})_c([1-6])s1_(\d{6})_00\.jpg$")
TOP, BOTTOM = LABELS.index("top"), LABELS.index("bottom")


def _many(n_ids: int = 12, n_poses: int = 8, size=(128, 64), seed: int = 0):
    """(sample, labels) pairs for identities 1..n_ids and poses 0..n_poses-1."""
    return [
        render_sample(i, p, size=size, seed=seed)
        for i in range(1, n_ids + 1)
        for p in range(n_poses)
    ]


def test_deterministic_and_order_independent():
    a = list(generate(4, 3, seed=5))
    b = list(generate(4, 3, seed=5))
    assert [s.name for s in a] == [s.name for s in b]
    for x, y in zip(a, b, strict=True):
        assert x.image.tobytes() == y.image.tobytes()
        assert x.keypoints.tobytes() == y.keypoints.tobytes()
    # Rendering one sample alone (other cache state, other order) gives the same bytes.
    alone, _ = render_sample(3, 2, seed=5)
    assert alone.image.tobytes() == a[3 * 3 - 3 + 2].image.tobytes()
    assert alone.name == a[8].name
    # Another seed gives other images.
    c = list(generate(4, 3, seed=6))
    assert sum(x.image.tobytes() != y.image.tobytes() for x, y in zip(a, c, strict=True)) == 12


@pytest.mark.parametrize("size", [(128, 64), (256, 256), (64, 32), (100, 90)])
def test_shapes_and_dtypes(size):
    for s in generate(3, 2, size=size):
        assert isinstance(s, SyntheticSample)
        assert s.image.dtype == np.uint8 and s.image.shape == (*size, 3)
        assert s.keypoints.dtype == np.float32 and s.keypoints.shape == (18, 2)
        assert s.scores.dtype == np.float32 and s.scores.shape == (18,)
        assert isinstance(s.camera, int) and 1 <= s.camera <= 6
        assert s.image.std() > 10  # not a blank frame


def test_counts_names_and_splits():
    samples = list(generate(10, 3, test_fraction=0.2))
    assert len(samples) == 30
    names = [s.name for s in samples]
    assert len(set(names)) == 30
    for s in samples:
        m = NAME_RE.match(s.name)
        assert m, s.name
        assert m.group(1) == s.identity == s.name.split("_")[0]  # Market-style identity parsing
        assert int(m.group(2)) == s.camera
        assert s.identity not in ("0000", "-1")
    test_ids = sorted({s.identity for s in samples if s.split == "test"})
    train_ids = sorted({s.identity for s in samples if s.split == "train"})
    assert test_ids == ["0009", "0010"]
    assert train_ids == [f"{i:04d}" for i in range(1, 9)]
    assert {s.split for s in generate(3, 1, test_fraction=0.0)} == {"train"}
    assert {s.split for s in generate(3, 1, test_fraction=1.0)} == {"test"}


@pytest.mark.parametrize(
    "kwargs",
    [{"num_identities": 0}, {"num_poses": 0}, {"size": (63, 64)}, {"size": (128, 20)},
     {"test_fraction": 1.5}],
)  # fmt: skip
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        next(generate(**kwargs))


@pytest.mark.parametrize("size", [(128, 64), (256, 256), (64, 32)])
def test_keypoints_inside_or_missing_and_on_the_figure(size):
    for s, labels in _many(10, 6, size=size):
        kp, sc = s.keypoints, s.scores
        h, w = size
        present = sc > 0
        assert set(np.unique(sc)) <= {0.0, 1.0}
        assert np.all(kp[~present] == -1)
        assert np.all((kp[present] >= 0) & (kp[present] <= [w - 1, h - 1]))
        xy = np.round(kp[present]).astype(int)
        on_figure = labels[xy[:, 1], xy[:, 0]] > 0
        assert on_figure.all(), (s.name, np.flatnonzero(present)[~on_figure])
        # The figure is big: it fills much of the frame height (or is cut by the frame).
        rows = np.flatnonzero((labels > 0).any(axis=1))
        assert rows[-1] - rows[0] > 0.6 * h


@pytest.mark.parametrize("size", [(128, 64), (256, 256)])
def test_keypoints_sit_on_the_right_body_parts(size):
    expected = {  # keypoint -> labels it may sit on
        (0, 16, 17): {"skin", "eyes"},
        (14, 15): {"eyes"},
        (2, 5): {"top", "skin", "hair"},
        (4, 7): {"skin"},
        (8, 11): {"bottom", "skin"},
        (10, 13): {"shoes"},
    }
    hits = {k: [] for k in expected}
    for s, labels in _many(10, 8, size=size):
        kp, ok = s.keypoints, s.scores > 0
        for ids, allowed in expected.items():
            for i in ids:
                if ok[i]:
                    x, y = np.round(kp[i]).astype(int)
                    hits[ids].append(LABELS[labels[y, x]] in allowed)
        # Face points sit on the head: above the neck, within about a head's reach of it.
        if ok[[1, 8, 11]].all():
            torso = np.linalg.norm(kp[1] - (kp[8] + kp[11]) / 2)
            for i in (0, 14, 15, 16, 17):
                if ok[i]:
                    assert kp[i, 1] < kp[1, 1], (s.name, i)
                    assert np.linalg.norm(kp[i] - kp[1]) < 0.6 * torso, (s.name, i)
    for ids, h in hits.items():
        assert len(h) > 20 and np.mean(h) >= 0.9, (ids, np.mean(h))


def test_anatomy_and_left_right_convention():
    fronts = backs = 0
    missing_face = missing_ear = missing_other = 0
    samples = _many(12, 10)
    for s, _ in samples:
        kp, ok = s.keypoints, s.scores > 0
        assert ok[[1, 2, 5, 8, 11]].all() or not ok[[2, 5]].all()  # neck iff both shoulders
        if ok[[2, 5]].all():
            np.testing.assert_allclose(kp[1], (kp[2] + kp[5]) / 2, atol=1e-4)
        y = kp[:, 1]
        for upper, lower in ((1, 8), (1, 11), (8, 9), (11, 12), (9, 10), (12, 13), (16, 2)):
            if ok[upper] and ok[lower]:
                assert y[upper] < y[lower], (s.name, upper, lower)
        # Facing the camera (nose and both eyes seen): the person's right is on image-left.
        if ok[[0, 14, 15]].all() and ok[[2, 5]].all():
            fronts += 1
            assert kp[14, 0] < kp[15, 0] and kp[2, 0] < kp[5, 0], s.name
        # Seen from the back (no face, both ears): the right is on image-right.
        if not ok[[0, 14, 15]].any() and ok[[16, 17]].all():
            backs += 1
            assert kp[16, 0] > kp[17, 0] and kp[2, 0] > kp[5, 0], s.name
        missing_face += not ok[0]
        missing_ear += not ok[[16, 17]].all()
        missing_other += not ok[[3, 4, 6, 7, 9, 10, 12, 13]].all()
    n = len(samples)
    assert fronts > 0.2 * n and backs > 0.08 * n
    # Back and side views hide face points; side views, crops and occlusion hide limbs.
    assert 0.1 * n < missing_face < 0.5 * n
    assert 0.2 * n < missing_ear < 0.8 * n
    assert 0.05 * n < missing_other < 0.6 * n


def _clothing(sample: SyntheticSample, labels: np.ndarray) -> np.ndarray:
    """Median RGB of the visible top and bottom, (6,)."""
    top = np.median(sample.image[labels == TOP], axis=0)
    bottom = np.median(sample.image[labels == BOTTOM], axis=0)
    return np.concatenate([top, bottom])


def test_clothing_consistent_per_identity_and_different_between():
    n_ids, n_poses = 12, 6
    feats = np.stack([_clothing(s, lab) for s, lab in _many(n_ids, n_poses)])
    feats = feats.reshape(n_ids, n_poses, 6)
    centroids = feats.mean(axis=1)
    # Within an identity only lighting and pattern phase change the colours: small spread.
    within = np.linalg.norm(feats - centroids[:, None], axis=2)
    between = np.linalg.norm(centroids[:, None] - centroids[None], axis=2)
    between[np.diag_indices(n_ids)] = np.inf
    assert np.median(within) < 0.35 * np.median(between[np.isfinite(between)])
    # Each image's clothing is nearest to its own identity's mean in nearly all cases.
    d = np.linalg.norm(feats[:, :, None] - centroids[None, None], axis=3)
    correct = d.argmin(axis=2) == np.arange(n_ids)[:, None]
    assert correct.mean() >= 0.9


def test_backgrounds_differ_between_images():
    samples = _many(3, 4)
    corners = [s.image[:8, :8].reshape(-1, 3).mean(0) for s, _ in samples]
    diffs = [np.abs(a - b).max() for i, a in enumerate(corners) for b in corners[i + 1 :]]
    assert min(diffs) > 0.5 and np.median(diffs) > 10


def _with_skeleton(image: np.ndarray, keypoints: np.ndarray, up: int) -> np.ndarray:
    out = cv2.resize(image, None, fx=up, fy=up, interpolation=cv2.INTER_NEAREST)
    kp = keypoints * up + (up - 1) / 2
    ok = keypoints[:, 0] >= 0
    for (a, b), color in zip(SKELETON_LIMBS, OPENPOSE_COLORS, strict=False):
        if ok[a] and ok[b]:
            pa, pb = (tuple(int(v) for v in kp[a]), tuple(int(v) for v in kp[b]))
            cv2.line(out, pa, pb, color, 2, cv2.LINE_AA)
    for i in np.flatnonzero(ok):
        cv2.circle(out, tuple(int(v) for v in kp[i]), 3, OPENPOSE_COLORS[i], -1, cv2.LINE_AA)
    return out


def test_contact_sheet():
    """Identities x poses, each image plain and with its skeleton: look at it after changes."""
    up, rows = 2, []
    for i in range(1, 7):
        tiles = []
        for p in range(6):
            s, _ = render_sample(i, p)
            plain = cv2.resize(s.image, None, fx=up, fy=up, interpolation=cv2.INTER_NEAREST)
            tiles += [plain, _with_skeleton(s.image, s.keypoints, up), np.full((256, 4, 3), 255)]
        rows.append(np.concatenate(tiles, axis=1).astype(np.uint8))
    sheet = np.concatenate(rows, axis=0)
    path = Path(tempfile.gettempdir()) / "synthetic_preview.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    assert cv2.imread(str(path)).shape == sheet.shape


def test_synthetic_adapter_matches_generate():
    from pg2kit.datasets.synthetic import Synthetic

    ad = Synthetic(num_identities=5, num_poses=3, size=(128, 64), seed=2)
    scan = ad.scan()
    records = scan.records["train"] + scan.records["test"]
    samples = list(generate(5, 3, size=(128, 64), seed=2))
    assert [r.name for r in records] == [s.name for s in samples]
    assert [r.camera for r in records] == [s.camera for s in samples]
    assert len(scan.records["test"]) == 3  # the last identity of 5 (20%)
    r, s = records[4], samples[4]
    np.testing.assert_array_equal(ad.load(r), s.image)
    kp, sc = ad.truth(r)
    np.testing.assert_array_equal(kp, s.keypoints)
    assert ad.frame == (128, 64, 0) and r.rel_path == f"synthetic/{s.name}"
