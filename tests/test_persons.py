"""pg2kit.persons: every person found on composed multi-person scenes, keypoints per person,
quality gates, the identity-person rule and crop_person (scenes made from synthetic figures)."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from pg2kit.persons import (
    DEFAULT_PAD,
    FinderConfig,
    Person,
    PersonFinder,
    choose_identity_person,
    crop_person,
    detector_anchors,
)

pytest.importorskip("ai_edge_litert")
pytest.importorskip("mediapipe")


def _scene(specs, hw=(360, 480), seed=0):
    """Paste synthetic figures (identity, pose, x, y, height) by their silhouettes onto a
    noisy wall; returns the image and each figure's true box (x0, y0, x1, y1)."""
    from pg2kit.datasets.synthetic import render_sample

    rng = np.random.default_rng(seed)
    img = np.empty(hw + (3,), np.uint8)
    img[:] = (150, 160, 140)
    img = (img + rng.integers(0, 20, img.shape)).astype(np.uint8)
    truth = []
    for ident, pose, x, y, height in specs:
        sample, labels = render_sample(ident, pose, size=(height, height // 2), seed=seed)
        m = labels > 0
        ys, xs = np.nonzero(m)
        ph, pw = m.shape
        # clip the figure at the frame edge
        cx0, cy0 = max(0, -x), max(0, -y)
        cx1, cy1 = min(pw, hw[1] - x), min(ph, hw[0] - y)
        region = img[y + cy0 : y + cy1, x + cx0 : x + cx1]
        mm = m[cy0:cy1, cx0:cx1]
        region[mm] = sample.image[cy0:cy1, cx0:cx1][mm]
        truth.append((x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1))
    return img, np.array(truth, np.float32)


def _inside(points: np.ndarray, box: np.ndarray, slack: float = 0.1) -> np.ndarray:
    h = box[3] - box[1]
    return (
        (points[:, 0] >= box[0] - slack * h)
        & (points[:, 0] <= box[2] + slack * h)
        & (points[:, 1] >= box[1] - slack * h)
        & (points[:, 1] <= box[3] + slack * h)
    )


@pytest.fixture(scope="module")
def finder():
    f = PersonFinder()
    yield f
    f.close()


def test_anchor_layout_matches_the_model():
    a = detector_anchors()
    assert a.shape == (2254, 2)
    assert a.min() > 0 and a.max() < 1
    # first anchors: stride 8 grid, two per cell, row-major
    np.testing.assert_allclose(a[0], a[1])
    np.testing.assert_allclose(a[2], (1.5 / 28, 0.5 / 28))


def test_every_figure_found_and_no_chimera(finder):
    img, truth = _scene([(1, 2, 20, 100, 200), (2, 2, 150, 60, 260), (3, 2, 300, 120, 180)], seed=2)
    persons = finder(img)
    accepted = [p for p in persons if p.reason is None]
    assert len(accepted) == 3
    matched = set()
    for p in accepted:
        kp = p.keypoints[p.keypoints[:, 0] >= 0]
        # every keypoint of a person lies in one true figure, and in no other: never a chimera
        owners = [i for i, t in enumerate(truth) if _inside(kp, t).mean() > 0.9]
        assert len(owners) == 1, (p.box, owners)
        matched.add(owners[0])
        assert p.keypoints.dtype == np.float32 and p.keypoints.shape == (18, 2)
        assert 0 <= p.score <= 1
    assert matched == {0, 1, 2}


def test_small_person_is_reported_as_too_small(finder):
    img, _ = _scene([(4, 1, 200, 150, 80)], seed=3)
    persons = finder(img)
    assert persons, "the detector should still see an 80 px figure"
    assert all(p.reason is not None for p in persons)
    assert any(p.reason.startswith("person too small") for p in persons)
    ok = PersonFinder(min_person_px=48)(img)
    assert any(p.reason is None for p in ok)


def test_person_cut_by_the_frame_edge(finder):
    # the figure's lower half lies below the frame
    img, _ = _scene([(2, 2, 200, 220, 260)], seed=2)
    persons = finder(img)
    assert persons
    assert not any(p.reason is None for p in persons)
    assert any("cut by the frame edge" in (p.reason or "") for p in persons)


def test_allow_cut_keeps_a_cut_person_with_its_box_clipped_to_the_frame(finder):
    # the figure's lowest 80 px lie below the frame
    img, truth = _scene([(1, 2, 200, 180, 260)], seed=2)
    assert [p.reason for p in finder(img)] == ["cut by the frame edge"]
    h, w = img.shape[:2]
    kept = [p for p in PersonFinder(allow_cut=True)(img) if p.reason is None]
    assert len(kept) == 1
    p = kept[0]
    assert p.quality.get("cut") is True
    assert 0 <= p.box[0] < p.box[2] <= w and 0 <= p.box[1] < p.box[3] <= h
    assert p.box[3] == h  # clipped at the bottom edge, where the figure leaves the frame
    ok = p.keypoints[:, 0] >= 0
    assert _inside(p.keypoints[ok], truth[0]).mean() >= 0.9


def test_prepare_folder_allow_cut_option(tmp_path):
    """`prepare folder` rejects a half-out-of-frame person as cut; `--allow-cut` keeps it, with
    its source_box inside the photo."""
    import cv2
    from click.testing import CliRunner

    from pg2kit import shards
    from pg2kit.cli import cli

    img, _ = _scene([(1, 2, 200, 180, 260)], seed=2)
    (tmp_path / "src" / "anna").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "src" / "anna" / "half.png"), img[:, :, ::-1])
    src = str(tmp_path / "src")
    base = ["prepare", "folder", src, "--workers", "1", "--quiet", "--size", "128x64"]
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "strict")])
    assert r.exit_code != 0, r.output
    assert "cut by the frame edge" in (tmp_path / "strict" / "failures.csv").read_text()
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "cut"), "--allow-cut"])
    assert r.exit_code == 0, r.output
    d = shards.read_split_fields(tmp_path / "cut", "train", ["source_box", "identity"])
    assert list(d["identity"]) == ["anna"]
    x0, y0, x1, y1 = d["source_box"][0]
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
    assert shards.load_manifest(tmp_path / "cut")["params"]["allow_cut"] is True


def test_a_too_small_part_inside_a_person_does_not_occlude_it(monkeypatch):
    """A too-small box lying inside an accepted person (a part found at a smaller tile scale)
    is not an occluder; the same box beside the person, overlapping it as much, is."""
    f = PersonFinder()

    def person(box, reason=None):
        return Person(box=np.array(box, np.float32), score=0.9, reason=reason,
                      keypoints=None if reason else np.zeros((18, 2), np.float32))  # fmt: skip

    monkeypatch.setattr(f, "estimate", lambda image, p, others=(): p)
    img = np.zeros((400, 400, 3), np.uint8)
    small = "person too small: 67 px < 96"
    # 75% of the small box lies inside the person and covers 40.3% of it (IoU 0.36: not a
    # duplicate); without the part rule the person would be rejected as occluded (> 40%)
    a, part = person((100, 100, 200, 200)), person((85, 95, 165, 162), small)
    assert f.estimate_all(img, [a, part])[0].reason is None
    # a box covering half of the person but lying mostly outside it is another person
    a, other = person((100, 100, 200, 200)), person((40, 90, 150, 200), small)
    reason = f.estimate_all(img, [a, other])[0].reason
    assert reason is not None and reason.startswith("occluded"), reason


def test_a_person_whose_keypoints_disagree_keeps_the_detector_box(finder, monkeypatch):
    img, _ = _scene([(1, 2, 60, 40, 240)], seed=1)
    det = finder.detect(img)
    assert det
    seen = {}

    def gate(p, ok, hw, others):
        seen["kbox"] = p.box = np.array([1, 2, 3, 4], np.float32)  # as _gate sets the keypoint box
        return "keypoints disagree with the detector box: (test)"

    monkeypatch.setattr(finder, "_gate", gate)
    p = finder.estimate(img, det[0])
    assert seen, "the gates should have run"
    np.testing.assert_array_equal(p.box, det[0].detector_box)


def test_overlapping_people_are_rejected_as_occluded(finder):
    # two figures side by side, 40% of each one's box covered by the other
    img, _ = _scene([(1, 2, 150, 80, 240), (3, 2, 210, 90, 240)], seed=2)
    persons = finder(img)
    reasons = [p.reason or "" for p in persons]
    assert any(r.startswith("occluded") for r in reasons), reasons
    # a larger threshold lets the people through
    loose = PersonFinder(max_overlap=1.0)(img)
    assert any(p.reason is None for p in loose)


def test_textures_and_empty_walls_have_no_person(finder):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:300, 0:400]
    stripes = np.repeat(((np.sin(xx / 7.0) + np.cos(yy / 11.0)) * 60 + 128)[..., None], 3, 2)
    wall, _ = _scene([], hw=(300, 400))
    for img in (noise, stripes.astype(np.uint8), wall):
        assert not [p for p in finder(img) if p.reason is None]


def test_finder_pickles_without_models(finder):
    finder.detect(np.zeros((64, 64, 3), np.uint8))
    clone = pickle.loads(pickle.dumps(finder))
    assert clone.config == finder.config
    assert clone._interp is None and clone._estimator is None


def test_options_override_the_config():
    f = PersonFinder(FinderConfig(min_person_px=50), max_overlap=0.5)
    assert f.config.min_person_px == 50 and f.config.max_overlap == 0.5
    with pytest.raises(TypeError):
        PersonFinder(no_such_option=1)


def test_roi_keypoints_find_every_figure_like_the_crop_estimator(finder):
    img, truth = _scene([(1, 2, 20, 100, 200), (2, 2, 150, 60, 260), (3, 2, 300, 120, 180)], seed=2)
    roi = PersonFinder(keypoints="roi")
    persons = roi.estimate_all(img, finder.detect(img))
    by_crop = finder.estimate_all(img, finder.detect(img))
    accepted = [p for p in persons if p.reason is None]
    assert len(accepted) == 3
    owners = set()
    for p, q in zip(persons, by_crop, strict=True):
        ok = p.keypoints[:, 0] >= 0
        hit = [i for i, t in enumerate(truth) if _inside(p.keypoints[ok], t).mean() > 0.9]
        assert len(hit) == 1  # never a chimera
        owners.add(hit[0])
        # the landmark model on the detector's ROI and the estimator on the crop agree
        both = ok & (q.keypoints[:, 0] >= 0)
        assert both.sum() >= 10
        d = np.linalg.norm(p.keypoints[both] - q.keypoints[both], axis=1)
        assert np.median(d) < 0.05 * p.height, np.median(d)
        assert 0.5 <= p.quality["presence"] <= 1.0
    assert owners == {0, 1, 2}
    roi.close()


def test_roi_views_1_runs_the_landmark_model_once_per_person(finder, monkeypatch):
    """roi_views=1 (prepare video's frames between detections): the landmark model runs on the
    ROI as is only, and its keypoints are close to the two fused views'."""
    img, truth = _scene([(1, 2, 40, 100, 200), (2, 2, 200, 60, 240)], seed=3)
    dets = finder.detect(img)
    calls = []
    real = PersonFinder._landmarks_on_roi

    def counted(self, image, person, flip, landmarks=True):
        calls.append((self.config.roi_views, flip))
        return real(self, image, person, flip, landmarks)

    monkeypatch.setattr(PersonFinder, "_landmarks_on_roi", counted)
    two = PersonFinder(keypoints="roi").estimate_all(img, dets)
    n2 = len(calls)
    one = PersonFinder(keypoints="roi", roi_views=1).estimate_all(img, dets)
    assert [flip for _, flip in calls[:n2]].count(True) == n2 // 2 > 0
    assert calls[n2:] and all(v == 1 and not flip for v, flip in calls[n2:])
    assert len(calls) - n2 == n2 // 2  # one call per person instead of two
    assert sum(p.reason is None for p in one) == sum(p.reason is None for p in two) == 2
    from pg2kit.keypoints import FLIP_PERM

    for p, q in zip(one, two, strict=True):
        # the same points, or the same with left and right swapped (one view alone cannot tell
        # a front view from a back view as well as the two fused)
        far = []
        for kp in (p.keypoints, p.keypoints[list(FLIP_PERM)]):
            both = (kp[:, 0] >= 0) & (q.keypoints[:, 0] >= 0)
            assert both.sum() >= 10
            far.append(np.median(np.linalg.norm(kp[both] - q.keypoints[both], axis=1)))
        assert min(far) < 0.05 * q.height, far
        assert p.quality["runs"] == 1 and p.quality["spread"] == 0.0
    assert FinderConfig(roi_views=1).tag() != FinderConfig().tag()  # a folder records it
    with pytest.raises(ValueError, match="roi_views must be 1 or 2"):
        PersonFinder(keypoints="roi", roi_views=0)


def test_roi_of_a_detection_is_centred_on_the_hip_and_mirrors():
    f = PersonFinder(keypoints="roi")
    p = Person(box=np.zeros(4, np.float32), score=1.0, hip=np.array([100.0, 200.0], np.float32),
               crown=np.array([100.0, 120.0], np.float32), size=80.0)  # fmt: skip
    m, mf = f._roi_transform(p), f._roi_transform(p, flip=True)
    np.testing.assert_allclose(m @ [128, 128, 1], [100, 200], atol=1e-4)
    # upright body: ROI up is image up, 2 x 1.25 body radii across 256 ROI pixels
    np.testing.assert_allclose(m @ [128, 0, 1], [100, 200 - 100], atol=1e-4)
    # the mirrored ROI's (256 - u, v) is the straight ROI's (u, v)
    np.testing.assert_allclose(mf @ [256 - 40, 70, 1], m @ [40, 70, 1], atol=1e-4)
    with pytest.raises(ValueError, match="keypoints must be"):
        PersonFinder(keypoints="box")


def test_presence_is_low_on_a_wall_and_high_on_a_figure(finder):
    img, truth = _scene([(1, 2, 150, 60, 260)], seed=2)
    person = max(finder.detect(img), key=lambda p: p.score)
    assert finder.presence(img, person) > 0.9
    wall = np.full_like(img, 128)
    assert finder.presence(wall, person) < 0.1  # the model's flag is a probability already


def test_a_detection_with_its_axis_pointing_down_is_scored_upright_again(finder):
    img, truth = _scene([(5, 1, 200, 50, 250)], seed=1)
    person = max(finder.detect(img), key=lambda p: p.score)
    # the same hip and size with the axis pointing down: an upside-down ROI (the landmark
    # model's flag tolerates some rotation, for this figure not this much)
    down = replace(person, crown=person.hip + (person.hip - person.crown))
    assert finder.presence(img, down) < 0.5
    no_retry = PersonFinder(finder.config, upright_retry_tilt=0)
    assert no_retry.estimate(img, down).reason.startswith("not a person")
    p = finder.estimate(img, down)
    assert p.reason is None, p.reason
    assert p.quality["presence_tilted"] < 0.5 < p.quality["presence"]
    np.testing.assert_allclose(p.crown, p.hip - [0, person.size], atol=1e-3)  # upright now
    # with roi keypoints the landmark model's views are taken again upright too
    r = PersonFinder(finder.config, keypoints="roi").estimate(img, down)
    assert r.reason is None and r.quality["presence_tilted"] < 0.5 < r.quality["presence"]
    assert np.abs(r.keypoints[8] - p.keypoints[8]).max() < 0.1 * person.size  # same hip found
    # a person leaning less than the limit keeps its own axis: no second score
    lean = np.array([np.sin(np.radians(20)), -np.cos(np.radians(20))]) * person.size
    assert finder._upright(replace(person, crown=person.hip + lean)) is None
    assert "presence_tilted" not in finder.estimate(img, person).quality


def test_heatmap_refinement_moves_only_confident_landmarks():
    from pg2kit.persons import _refine_on_heatmap

    heat = np.full((64, 64, 2), -10.0, np.float32)
    heat[30, 20, 0] = heat[30, 22, 0] = 5.0  # two confident cells around (21, 30)
    heat[10, 10, 1] = -1.0  # confidence 0.27 < 0.5: landmark 1 stays
    xy = np.array([[20.5 / 64, 30.2 / 64], [10.0 / 64, 10.0 / 64]], np.float32)
    out = _refine_on_heatmap(xy, heat)
    np.testing.assert_allclose(out[0] * 64, [21.0, 30.0], atol=0.01)
    np.testing.assert_allclose(out[1], xy[1])


def _person(box, reason=None):
    return Person(
        box=np.array(box, np.float32), score=0.9, keypoints=np.zeros((18, 2)), reason=reason
    )


def test_identity_person_rule_size_then_centrality():
    shape = (400, 600)
    # the larger, nearer player wins even off-centre
    big_side = _person((20, 50, 140, 390))
    small_centre = _person((280, 150, 330, 300))
    assert choose_identity_person([small_centre, big_side], shape) == 1
    # equal size: the more central one wins
    left = _person((10, 100, 90, 300))
    centre = _person((260, 100, 340, 300))
    assert choose_identity_person([left, centre], shape) == 1
    # rejected persons are never chosen; none accepted -> None
    assert choose_identity_person([_person((0, 0, 600, 400), "occluded: 50%"), left], shape) == 1
    assert choose_identity_person([_person((0, 0, 10, 10), "x")], shape) is None
    assert choose_identity_person([], shape) is None


@pytest.mark.parametrize("pad", ["constant", "edge", "reflect"])
def test_crop_person_pads_and_maps_keypoints(pad):
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :, 0] = np.arange(200, dtype=np.uint8)[None, :]  # red = column
    img[:, :, 1] = 200
    box = (150, 10, 210, 90)  # runs past the right edge
    crop, to_crop = crop_person(img, box, (64, 32), pad=pad, margin=0.0)
    assert crop.shape == (64, 32, 3) and crop.dtype == np.uint8
    right = crop[:, -2:]
    if pad == "constant":
        assert (right == 0).all()
    elif pad == "edge":
        assert (right[..., 1] == 200).all() and abs(int(right[..., 0].mean()) - 199) <= 2
    else:
        assert (right[..., 1] == 200).all() and right[..., 0].mean() < 195  # mirrored back
    kp = np.array([[180.0, 50.0], [-1, -1], [0.0, 0.0]], np.float32)
    mapped, sc = to_crop(kp, np.ones(3, np.float32))
    # the crop is box height 80 -> 64 rows: scale 0.8, centred on the box centre x = 180
    assert abs(mapped[0, 0] - 15.5) < 1.0 and abs(mapped[0, 1] - 32.0) < 1.0
    assert (mapped[1] == -1).all() and sc[1] == 0  # missing stays missing
    assert (mapped[2] == -1).all() and sc[2] == 0  # outside the crop becomes missing
    assert (to_crop(kp)[0] == mapped[0]).all()


def test_crop_person_rejects_bad_input():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="pad"):
        crop_person(img, (0, 0, 5, 5), (8, 8), pad="wrap")
    with pytest.raises(ValueError, match="box"):
        crop_person(img, (5, 5, 5, 9), (8, 8))
    assert DEFAULT_PAD in ("constant", "edge", "reflect")


# ---- segmentation proposals -------------------------------------------------------------------


def test_segmentation_tiles_cover_the_image_at_each_side():
    f = PersonFinder()
    tiles = f.segment_tiles(576, 768)
    sides = [s for _, _, s in tiles]
    assert sides.count(256) == 20 and sides.count(384) == 6 and sides.count(576) == 2
    assert tiles[-1] == (0, 0, 768)  # the whole image, letterboxed
    for side in (256, 384, 576):
        cover = np.zeros((576, 768), bool)
        for x, y, s in tiles:
            if s == side:
                cover[y : y + s, x : x + s] = True
        assert cover.all()
    assert f.segment_tiles(200, 100) == [(0, 0, 200)]  # no tile fits: the whole image only
    assert PersonFinder(segment_tiles=()).segment_tiles(576, 768) == []


def _fake_segmenter(finder, monkeypatch):
    """The 'model' reads the tile's red channel as the person probability."""
    import cv2

    def segment(tile):
        red = tile[..., 0].astype(np.float32) / 255.0
        return cv2.resize(red, (256, 256), interpolation=cv2.INTER_NEAREST)

    monkeypatch.setattr(finder, "segment", segment)


def test_segmentation_proposals_are_whole_person_shaped_components(monkeypatch):
    f = PersonFinder(segment_tiles=(256,))
    _fake_segmenter(f, monkeypatch)
    image = np.zeros((300, 600, 3), np.uint8)
    image[20:200, 40:100, 0] = 255  # a person: 180 x 60 px
    image[40:220, 230:290, 0] = 255  # a person across the edge of the first tiles (x = 256)
    image[250:290, 300:500, 0] = 255  # wider than tall: not a person
    image[30:80, 400:420, 0] = 255  # 50 px tall, under 0.8 x 96: too small to be a candidate
    props = sorted(f.segment_proposals(image), key=lambda p: p.box[0])
    assert len(props) == 2
    np.testing.assert_allclose(props[0].box, (40, 20, 100, 200), atol=3)
    # found whole in the tile that holds it, not cut in two by the tile that does not
    np.testing.assert_allclose(props[1].box, (230, 40, 290, 220), atol=3)
    p = props[0]
    cfg = f.config
    r = (p.box[3] - p.box[1]) / (cfg.top + cfg.bottom)
    assert p.size == pytest.approx(r)
    np.testing.assert_allclose(
        p.hip, ((p.box[0] + p.box[2]) / 2, p.box[1] + cfg.top * r), atol=1e-3
    )
    np.testing.assert_allclose(p.crown, p.hip - (0, r), atol=1e-3)  # upright
    assert p.detector_box[2] - p.detector_box[0] == pytest.approx(2 * cfg.half_width * r, abs=1e-3)
    assert p.quality["source"] == "segmentation" and p.score == pytest.approx(1.0)


def _upright_skeleton(box, flip=False):
    """COCO-18 keypoints of an upright (or upside-down) person filling `box`."""
    x0, y0, x1, y1 = box
    cx, h = (x0 + x1) / 2, y1 - y0
    rows = {
        0: 0.06,
        1: 0.18,
        2: 0.18,
        5: 0.18,
        8: 0.52,
        11: 0.52,
        9: 0.75,
        12: 0.75,
        10: 0.97,
        13: 0.97,
    }
    kp = np.full((18, 2), -1, np.float32)
    for i, f in rows.items():
        dx = {2: -1, 8: -0.5, 9: -0.5, 10: -0.5, 5: 1, 11: 0.5, 12: 0.5, 13: 0.5}.get(i, 0)
        kp[i] = (cx + dx * 0.2 * (x1 - x0), y1 - f * h if flip else y0 + f * h)
    return kp


def test_segmentation_persons_must_be_upright():
    from pg2kit.persons import _check_segmented

    def seg(box, flip=False):
        p = _person(box)
        p.keypoints = _upright_skeleton(box, flip)
        p.quality["source"] = "segmentation"
        return p

    upright, upside_down = seg((0, 0, 60, 180)), seg((100, 0, 160, 180), flip=True)
    detector_upside_down = _person((400, 0, 460, 180))
    detector_upside_down.keypoints = _upright_skeleton((400, 0, 460, 180), flip=True)
    _check_segmented([upright, upside_down, detector_upside_down])
    assert upright.reason is None and upright.quality["tilt"] < 1
    assert "from upright" in upside_down.reason
    assert detector_upside_down.reason is None  # the detector's own axis is trusted


def test_a_person_holding_another_found_person_in_its_box_is_occluded():
    def person(box, reason=None):
        p = _person(box, reason)
        p.keypoints = _upright_skeleton(box)
        return p

    outer, inner = person((200, 0, 280, 300)), person((210, 150, 270, 290))
    outer2 = person((290, 40, 350, 170))
    too_small_inner = person((300, 75, 330, 165), reason="person too small: 90 px < 96")
    with_part = person((500, 0, 560, 240))
    part = person((515, 20, 545, 70), reason="person too small: 50 px < 96")
    alone = person((0, 0, 60, 180))
    done = PersonFinder()._resolve([outer, inner, outer2, too_small_inner, with_part, part, alone])
    assert "stands inside its box" in outer.reason
    assert inner.reason.startswith("occluded")  # covered by the outer box: both are compromised
    assert outer2.reason is None  # a candidate too small to estimate inside is a part of it
    assert with_part.reason is None  # a candidate under 0.3 of its height is a part of it
    assert alone.reason is None and len(done) == 7


def test_a_small_detection_of_a_persons_upper_body_does_not_occlude_it():
    """The detector, at a smaller tile scale, finds a person's upper body again as a smaller
    person, beside it by part of its width: top to top with the person, it is a part of it.
    A candidate of the same size lower down (standing over the person's legs) still occludes."""

    def person(box, reason=None):
        p = _person(box, reason)
        p.keypoints = _upright_skeleton(box)
        return p

    small = "person too small: 90 px < 96"
    upper = person((600, 0, 660, 200))
    upper_part = person((580, 5, 635, 125), reason=small)  # 64% inside, tops 5 px apart
    legs = person((700, 0, 760, 200))
    in_front = person((675, 80, 730, 195), reason=small)  # 55% inside, top at the waist
    PersonFinder()._resolve([upper, upper_part, legs, in_front])
    assert upper.reason is None
    assert "stands inside its box" in legs.reason
    # with the rule off, the upper-body detection occludes as before
    upper.reason = None
    PersonFinder(part_top_tolerance=0.0)._resolve([upper, upper_part])
    assert "stands inside its box" in upper.reason


def test_segmentation_finds_a_figure_the_detector_does_not_report(finder, monkeypatch):
    img, truth = _scene([(1, 2, 150, 60, 260)], seed=2)
    monkeypatch.setattr(finder, "detect", lambda image: [])
    persons = finder(img)
    accepted = [p for p in persons if p.reason is None]
    assert len(accepted) == 1 and accepted[0].quality["source"] == "segmentation"
    assert _inside(accepted[0].keypoints[accepted[0].keypoints[:, 0] >= 0], truth[0]).all()
    off = PersonFinder(segment_tiles=())
    monkeypatch.setattr(off, "detect", lambda image: [])
    assert off(img) == []
    assert off.config.tag() != finder.config.tag()  # a prepared folder records the change


def test_segmentation_proposes_only_where_no_accepted_person_is(monkeypatch):
    f = PersonFinder()
    accepted = _person((100, 0, 200, 300))
    accepted.detector_box = accepted.box.copy()
    elsewhere, same, legs = (
        _person((300, 0, 360, 180)),
        _person((105, 5, 195, 290)),
        _person((120, 150, 180, 300)),  # a component of the accepted person's own legs
    )
    estimated = []

    def estimate(image, p, others=()):
        estimated.append(p)
        return p

    monkeypatch.setattr(f, "detect", lambda image: [accepted])
    monkeypatch.setattr(f, "segment_proposals", lambda image: [elsewhere, same, legs])
    monkeypatch.setattr(f, "estimate", estimate)
    f.find(np.zeros((300, 400, 3), np.uint8))
    assert estimated == [accepted, elsewhere]
