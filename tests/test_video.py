"""`prepare video`: synthetic figures walking in a video written here with cv2.VideoWriter are
found, tracked into one identity per person, and flow on through pairs and train; bad videos are
one failures.csv row each and the run goes on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pg2kit import shards
from pg2kit.cli import cli
from pg2kit.datasets.synthetic import render_sample
from pg2kit.datasets.video import pose_distance, thin_track, track_split
from pg2kit.prepare import Found

pytest.importorskip("ai_edge_litert")

H, W, FIG = 224, 336, 180  # frame and figure height (px)
PEOPLE = ((1, 30, 6), (2, 220, -6))  # (synthetic identity, start x, x step per frame)


def scene(t: int, people=PEOPLE) -> np.ndarray:
    """Frame t: a gradient background with each figure at x0 + v * t, in one pose mirrored on
    every other frame (a stride: the pose changes, the person's look does not; the synthetic
    figure's numbered poses differ in view and framing as much as two people do)."""
    ramp = (100 + 60 * np.linspace(0, 1, H))[:, None, None].astype(np.uint8)
    img = np.broadcast_to(ramp, (H, W, 3)).copy()
    for identity, x0, v in people:
        sample, labels = render_sample(identity, 1, size=(FIG, FIG // 2), seed=0)
        figure = sample.image[:, ::-1] if t % 2 else sample.image
        body = labels[:, ::-1] > 0 if t % 2 else labels > 0
        x, y = x0 + v * t, H - FIG - 10
        img[y : y + FIG, x : x + FIG // 2][body] = figure[body]
    return img


def write_video(path: Path, frames: int = 8, people=PEOPLE, size=(W, H)) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    assert vw.isOpened()
    for t in range(frames):
        img = scene(t, people) if people else np.random.default_rng(t).integers(
            0, 255, (size[1], size[0], 3), dtype=np.uint8)  # fmt: skip
        vw.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def failures(out: Path) -> list[dict]:
    with open(out / "failures.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_video_tracks_pairs_train(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "walk.avi", frames=6)
    data = tmp_path / "data"
    r = invoke("prepare", "video", src / "walk.avi", "-o", data, "--workers", 1, "--min-track",
               3, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "videos 1 (1 used), frames read 6" in r.output and "tracks kept 2" in r.output
    f = shards.read_split_fields(data, "train", ["identity", "track", "frame", "source_box",
                                                 "detector_score", "name", "camera",
                                                 "keypoints"])  # fmt: skip
    idents = sorted(set(f["identity"].tolist()))
    assert idents == ["walk#0", "walk#1"]
    for ident in idents:
        sel = f["identity"] == ident
        assert sel.sum() >= 4  # most of the 6 frames pass the gates
        assert len(set(f["track"][sel].tolist())) == 1
        frames = f["frame"][sel]
        assert (np.diff(frames) > 0).all()
        # a track follows one figure: in every frame its box centre is nearest that figure's
        cx = f["source_box"][sel][:, [0, 2]].mean(1)
        truth = np.array([[x0 + v * t + FIG / 4 for _, x0, v in PEOPLE] for t in frames])
        nearest = np.abs(truth - cx[:, None]).argmin(1)
        assert len(set(nearest.tolist())) == 1, (ident, cx, truth)
        assert np.abs(truth[np.arange(len(cx)), nearest] - cx).max() < 40
    assert (f["camera"] == 0).all() and (f["detector_score"] > 0.3).all()
    assert all(n.startswith("walk_t000") and n.endswith(".png") for n in f["name"])
    sheet = data / "inspect" / "tracks.png"
    assert sheet.exists()
    sheet.unlink()
    r = invoke("inspect", data, "-n", 2)  # inspect re-draws it for video data
    assert r.exit_code == 0 and "track sheet:" in r.output and sheet.exists(), r.output
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["video_summary"]["tracks_kept"] == 2

    # pairs pair within a track only, then a few training steps run
    r = invoke("pairs", data, "--protocol", "pg2")
    assert r.exit_code == 0, r.output
    with h5py.File(data / "pairs.h5") as h:
        pairs = h["train"][...]
    assert len(pairs) and (f["identity"][pairs[:, 0]] == f["identity"][pairs[:, 1]]).all()
    r = invoke("train", data, "--preset", "tiny", "-o", tmp_path / "run", "--channels", 4,
               "--g1-steps", 1, "--steps", 2, "--batch-size", 2, "--ckpt-every", 2,
               "--sample-every", 2, "--log-every", 1)  # fmt: skip
    assert r.exit_code == 0, r.output


def test_bad_videos_are_rows_and_the_run_goes_on(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    good = write_video(src / "a_good.avi", frames=4)
    (src / "b_text.mp4").write_text("this is not a video\n" * 50)
    (src / "c_empty.mkv").write_bytes(b"")
    vw = cv2.VideoWriter(str(src / "d_zero.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    vw.release()  # a container with no frame
    write_video(src / "e_nobody.avi", frames=4, people=(), size=(160, 120))
    data = good.read_bytes()
    (src / "f_cut.avi").write_bytes(data[: len(data) // 2])  # truncated
    (src / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    r = invoke("prepare", "video", src, "-o", out, "--workers", 1, "--min-track", 2, "--quiet")
    assert r.exit_code == 0, r.output
    rows = {Path(row["path"]).name: row["reason"] for row in failures(out)
            if not row["reason"].startswith("frame ")}  # fmt: skip
    assert "cannot open" in rows["b_text.mp4"]
    assert "empty file" in rows["c_empty.mkv"]
    assert "d_zero.avi" in rows and ("no frame" in rows["d_zero.avi"]
                                     or "cannot open" in rows["d_zero.avi"])  # fmt: skip
    assert "nobody found in 4 frames" in rows["e_nobody.avi"]
    assert "f_cut.avi" in rows  # cut short: what was decoded is used, the row says so
    for name in ("b_text.mp4", "c_empty.mkv", "d_zero.avi", "e_nobody.avi"):
        assert f"skipped {name}" in r.output  # one line naming the file on the terminal
    got = shards.read_split_fields(out, "train", ["identity"])["identity"]
    assert {i.split("#")[0] for i in got} >= {"a_good"}
    assert "ignored 1 non-video file" in r.output

    # a resolution over --max-pixels is refused before any frame is decoded
    r = invoke("prepare", "video", good, "-o", tmp_path / "o2", "--max-pixels", 50_000,
               "--quiet")  # fmt: skip
    assert r.exit_code == 1 and "nothing usable" in r.output
    assert f"{W}x{H}" in failures(tmp_path / "o2")[0]["reason"]
    assert "> --max-pixels" in failures(tmp_path / "o2")[0]["reason"]


def _found(kp: np.ndarray, frame: int) -> Found:
    return Found(np.zeros((8, 4, 3), np.uint8), kp, np.ones(18, np.float32),
                 np.zeros(4, np.float32), 1.0, frame=frame)  # fmt: skip


def test_pose_change_thinning_and_track_split():
    base = np.stack([np.arange(18) * 2.0, np.arange(18) * 3.0], 1).astype(np.float32)
    same = [_found(base + 0.1 * i, i) for i in range(5)]  # near-identical poses
    moved = [_found(base + 10.0 * (i + 1), 5 + i) for i in range(3)]
    track = same + moved
    assert thin_track(track, 0.0, 128) == track
    kept = thin_track(track, 0.05, 128)  # 5% of 128 px = 6.4 px mean displacement
    assert [s.frame for s in kept] == [0, 5, 6, 7]
    assert pose_distance(base, base + 12.8, 128) == pytest.approx(12.8 * np.sqrt(2) / 128)
    missing = base.copy()
    missing[2:] = -1
    assert pose_distance(base, missing, 128) == np.inf  # fewer than 3 shared keypoints
    splits = [track_split(0, 0, t, 0.3) for t in range(200)]
    assert 0.2 < splits.count("test") / 200 < 0.4
    assert splits == [track_split(0, 0, t, 0.3) for t in range(200)]
    assert track_split(0, 0, 5, 0.0) == "train"


def test_track_frames_detects_every_kth_frame_and_follows_between():
    """--detect-every K: segments of K consecutive frames (the last one shorter), each run as
    one task; with K = 1 every frame is detected; results reach the tracker in frame order."""
    from pg2kit.datasets.video import FrameResult, FrameTask, track_frames
    from pg2kit.tracking import Tracker

    def result(frame):
        box = np.array([[3.0 * frame, 0, 3.0 * frame + 10, 40]], np.float32)
        return FrameResult(frame, box, np.full(1, 0.9, np.float32), [object()], [None])

    calls = []

    def run(kind, items):
        calls.append((kind, [[t.frame for t in seg] if kind == "follow" else seg.frame
                             for seg in items]))  # fmt: skip
        if kind == "detect":
            return [result(t.frame) for t in items]
        return [[result(t.frame) for t in seg] for seg in items]

    tasks = [FrameTask(f, np.zeros((4, 4, 3), np.uint8)) for f in range(11)]
    batches = [tasks[i : i + 4] for i in range(0, 11, 4)]
    out = list(track_frames(iter(batches), 3, run, Tracker()))
    segments = [seg for kind, segs in calls for seg in segs]
    assert {kind for kind, _ in calls} == {"follow"}
    assert segments == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]
    assert [r.frame for r, _ in out] == list(range(11))
    assert {i for _, ids in out for i in ids} == {0}  # one track throughout
    calls.clear()
    out = list(track_frames(iter(batches), 1, run, Tracker()))
    assert [seg for _, segs in calls for seg in segs] == list(range(11))
    assert {kind for kind, _ in calls} == {"detect"}
    assert [r.frame for r, _ in out] == list(range(11))

    # a person accepted by the gates starts a track at a low detector score (0.35); a rejected
    # candidate does not, however confident the detector
    def detect(kind, items):
        return [FrameResult(t.frame, np.array([[3.0 * t.frame, 0, 3.0 * t.frame + 10, 40],
                                               [200, 0, 210, 40]], np.float32),
                            np.array([0.35, 0.95], np.float32), [object(), None],
                            [None, "not a person: pose presence 0.12 < 0.5"])
                for t in items]  # fmt: skip

    out = list(track_frames(iter(batches), 1, detect, Tracker()))
    assert {ids[0] for _, ids in out} == {0} and {ids[1] for _, ids in out} == {-1}


def test_follow_moves_the_roi_with_the_person():
    from pg2kit.persons import Person, PersonFinder

    f = PersonFinder(keypoints="roi")
    kp = np.full((18, 2), -1, np.float32)
    kp[8], kp[11] = (95, 100), (105, 100)
    p = Person(box=np.zeros(4, np.float32), score=0.8, keypoints=kp,
               hip=np.array([90, 100], np.float32), crown=np.array([90, 20], np.float32),
               size=80.0)  # fmt: skip
    q = f.follow(p)  # no landmark-model ROI: the detector's geometry moved to the hips
    np.testing.assert_allclose(q.hip, [100, 100])
    np.testing.assert_allclose(q.crown, [100, 20])
    assert q.size == 80 and q.score == 0.8
    np.testing.assert_allclose(q.box, [100 - 32, 20, 100 + 32, 160])
    p.aux = np.array([[120, 110], [120, 10]], np.float32)  # the model's own hip and size point
    q = f.follow(p)
    np.testing.assert_allclose(q.hip, [120, 110])
    assert q.size == 100
    # an occluded person's ROI holds the occluder too and can slide onto it: not followed
    for reason in ("not a person: pose presence 0.1 < 0.5", "keypoints disagree with the "
                   "detector box: 2 of 4 torso points", "duplicate: the same person",
                   "occluded: 45% overlap with another person"):  # fmt: skip
        p.reason = reason
        assert f.follow(p) is None
    p.reason = "person too small: 80 px < 96"
    assert f.follow(p) is not None  # still a person, worth following


def test_video_detect_every_keeps_tracks_and_samples_between_detections(tmp_path):
    path = write_video(tmp_path / "walk.avi", frames=7)
    data = tmp_path / "data"
    r = invoke("prepare", "video", path, "-o", data, "--workers", 1, "--min-track", 3,
               "--detect-every", 3, "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "tracks kept 2" in r.output, r.output
    f = shards.read_split_fields(data, "train", ["identity", "frame", "source_box"])
    for ident in sorted(set(f["identity"].tolist())):
        sel = f["identity"] == ident
        frames = f["frame"][sel]
        assert set(frames.tolist()) - {0, 3, 6}, frames  # samples between the detections
        cx = f["source_box"][sel][:, [0, 2]].mean(1)
        truth = np.array([[x0 + v * t + FIG / 4 for _, x0, v in PEOPLE] for t in frames])
        nearest = np.abs(truth - cx[:, None]).argmin(1)
        assert len(set(nearest.tolist())) == 1, (ident, cx, truth)
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["params"]["detect_every"] == 3
    # the same command again finds it done; after a change of the person finder's or the
    # estimator's defaults (a stale version in a shard's marker) it is refused, not resumed
    again = ("prepare", "video", path, "-o", data, "--workers", 1, "--min-track", 3,
             "--detect-every", 3)  # fmt: skip
    r = invoke(*again)
    assert r.exit_code == 0 and "already prepared" in r.output, r.output
    marker = shards.marker_path(sorted((data / "shards").glob("*.h5"))[0])
    info = json.loads(marker.read_text())
    assert info["keypoints_version"] == shards.shard_attrs(data)["estimator_version"]
    marker.write_text(json.dumps({**info, "keypoints_version": "persons-0ld"}))
    r = invoke(*again)
    assert r.exit_code != 0 and "keypoints were found with other settings" in r.output, r.output
    assert "persons-0ld" in r.output and "--overwrite" in r.output


def test_person_keypoints_option_reaches_the_finder(tmp_path):
    from pg2kit.prepare import PrepareConfig, _person_options

    def kind(**kw):
        return _person_options(PrepareConfig(out=tmp_path, **kw)).get("keypoints", "crop")

    assert kind(dataset="video") == "crop" and kind(dataset="folder") == "crop"
    assert kind(dataset="video", person_keypoints="roi") == "roi"
    assert kind(dataset="table", person_keypoints="roi") == "roi"
    r = invoke("prepare", "--help")
    assert "--person-keypoints [crop|roi]" in r.output
    # a folder prepared with crop keypoints is not taken as prepared with roi ones (and outputs
    # prepared before the option still match)
    params = PrepareConfig(dataset="folder", out=tmp_path).shard_params()
    assert "person_keypoints" not in params
    roi = PrepareConfig(dataset="folder", out=tmp_path, person_keypoints="roi").shard_params()
    assert roi == {**params, "person_keypoints": "roi"}


def test_segment_option_defaults_on_for_photos_off_for_video(tmp_path):
    from pg2kit.keypoint_sources import persons_version
    from pg2kit.persons import PersonFinder
    from pg2kit.prepare import PrepareConfig, _person_options

    def tiles(**kw):
        return PersonFinder(
            **_person_options(PrepareConfig(out=tmp_path, **kw))
        ).config.segment_tiles

    assert (
        tiles(dataset="folder") and tiles(dataset="table") and tiles(dataset="video", segment=True)
    )
    assert tiles(dataset="video") == () and tiles(dataset="folder", segment=False) == ()
    on = _person_options(PrepareConfig(dataset="folder", out=tmp_path))
    off = _person_options(PrepareConfig(dataset="folder", out=tmp_path, segment=False))
    assert persons_version(on) != persons_version(off)
    # only a setting that differs from the dataset's default is a shard parameter (outputs
    # prepared before the option still match)
    for dataset, other in (("folder", False), ("video", True)):
        params = PrepareConfig(dataset=dataset, out=tmp_path).shard_params()
        assert "segment" not in params
        assert (
            PrepareConfig(dataset=dataset, out=tmp_path, segment=not other).shard_params() == params
        )
        changed = PrepareConfig(dataset=dataset, out=tmp_path, segment=other).shard_params()
        assert changed == {**params, "segment": other}
    assert "--segment / --no-segment" in invoke("prepare", "--help").output


def test_follow_views_reaches_the_follower_and_the_params(tmp_path, monkeypatch):
    """--follow-views N: the landmark model runs N times per followed person (1: never
    mirrored); a video folder made with one value is not resumed with the other."""
    from pg2kit.persons import PersonFinder

    flips = []
    real = PersonFinder._landmarks_on_roi

    def counted(self, image, person, flip, landmarks=True):
        flips.append(flip)
        return real(self, image, person, flip, landmarks)

    monkeypatch.setattr(PersonFinder, "_landmarks_on_roi", counted)
    path = write_video(tmp_path / "walk.avi", frames=5)
    for views in (1, 2):
        flips.clear()
        data = tmp_path / f"data{views}"
        r = invoke("prepare", "video", path, "-o", data, "--workers", 1, "--quiet",
                   "--detect-every", 5, "--follow-views", views)  # fmt: skip
        assert r.exit_code == 0, r.output
        assert "tracks kept 2" in r.output, r.output
        # detection frames score presence on the plain ROI only; followed frames add a
        # mirrored run per person with 2 views
        assert (flips.count(True) > 0) == (views == 2), flips
        params = json.loads((data / "manifest.json").read_text())["params"]
        assert params.get("follow_views", 2) == views  # recorded when not the default
    r = invoke("prepare", "video", path, "-o", tmp_path / "data1", "--workers", 1, "--quiet",
               "--detect-every", 5, "--follow-views", 2)  # fmt: skip
    assert r.exit_code != 0 and "follow_views" in r.output, r.output


def test_detect_every_defaults_to_a_detection_every_8_video_frames(tmp_path):
    from pg2kit.prepare import PrepareConfig

    def k(**kw):
        return PrepareConfig(dataset="video", out=tmp_path, **kw).key_every

    assert k() == 8 and k(every=3) == 2 and k(every=10) == 1
    assert k(every=3, detect_every=5) == 5 and k(detect_every=1) == 1
    assert PrepareConfig(dataset="video", out=tmp_path, every=3).shard_params()["detect_every"] == 2
    assert (
        "detect_every" not in PrepareConfig(dataset="video", out=tmp_path, every=8).shard_params()
    )


def test_appearance_cuts_a_swapped_track_and_joins_each_person_again(tmp_path, monkeypatch):
    """A tracker that swaps the two walkers' ids from frame 3 on (as boxes alone do where
    people cross): with the appearance pass each identity is one walker with all its frames;
    with it off (0, 0) both identities mix the two walkers."""
    import pg2kit.tracking

    class Swapping(pg2kit.tracking.Tracker):
        def update(self, frame_index, boxes, scores=None, starts=None):
            ids = super().update(frame_index, boxes, scores, starts)
            swapped = np.where(ids == 0, 1, np.where(ids == 1, 0, ids))
            return swapped if frame_index >= 3 else ids

    monkeypatch.setattr(pg2kit.tracking, "Tracker", Swapping)
    path = write_video(tmp_path / "walk.avi", frames=6)

    def walkers(*extra):
        data = tmp_path / ("data" + "".join(extra))
        r = invoke("prepare", "video", path, "-o", data, "--workers", 1, "--quiet", *extra)
        assert r.exit_code == 0, r.output
        f = shards.read_split_fields(data, "train", ["identity", "frame", "source_box"])
        out = {}
        for ident in sorted(set(f["identity"].tolist())):
            sel = f["identity"] == ident
            cx = f["source_box"][sel][:, [0, 2]].mean(1)
            truth = np.array([[x0 + v * t + FIG / 4 for _, x0, v in PEOPLE]
                              for t in f["frame"][sel]])  # fmt: skip
            out[ident] = (np.abs(truth - cx[:, None]).argmin(1).tolist(), f["frame"][sel])
        return out, r.output

    mixed, _ = walkers("--appearance-split", "0", "--appearance-join", "0")
    assert sorted(mixed) == ["walk#0", "walk#1"]
    assert all(len(set(who)) == 2 for who, _ in mixed.values())  # both tracks swapped
    fixed, output = walkers()
    assert "2 track(s) cut where the person changed, 2 joined" in output, output
    assert sorted(fixed) == ["walk#0", "walk#1"]
    for who, frames in fixed.values():
        assert len(set(who)) == 1 and len(frames) >= 5  # one walker, (nearly) every frame
    assert {fixed["walk#0"][0][0], fixed["walk#1"][0][0]} == {0, 1}
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert manifest["params"]["appearance_split"] == 0.35
    assert manifest["video_summary"]["cuts"] == 2 and manifest["video_summary"]["joins"] == 2


def test_an_accepted_person_without_a_track_id_is_listed_not_kept(tmp_path, monkeypatch):
    """A tracker that gives track 1 no id from frame 3 on: those samples are failures.csv rows
    ('not tracked'), never an identity 'walk#-1'."""
    import pg2kit.tracking

    class Losing(pg2kit.tracking.Tracker):
        def update(self, frame_index, boxes, scores=None, starts=None):
            ids = super().update(frame_index, boxes, scores, starts)
            return np.where(ids == 1, -1, ids) if frame_index >= 3 else ids

    monkeypatch.setattr(pg2kit.tracking, "Tracker", Losing)
    path = write_video(tmp_path / "walk.avi", frames=6)
    data = tmp_path / "data"
    r = invoke("prepare", "video", path, "-o", data, "--workers", 1, "--quiet",
               "--appearance-split", "0", "--appearance-join", "0")  # fmt: skip
    assert r.exit_code == 0, r.output
    f = shards.read_split_fields(data, "train", ["identity", "frame"])
    idents = set(f["identity"].tolist())
    assert "walk#-1" not in idents and "walk#0" in idents
    assert f["frame"][f["identity"] == "walk#1"].max() < 3
    rows = (data / "failures.csv").read_text()
    assert rows.count("accepted person not tracked") >= 2, rows


def test_regroup_tracks_cuts_joins_and_drops_with_new_ids():
    from pg2kit.datasets.video import regroup_tracks

    red = np.zeros((2, 144), np.float32)
    red[:, 0] = 1
    green = np.zeros((2, 144), np.float32)
    green[:, 1] = 1

    def sample(frame, x, look):
        s = _found(np.zeros((18, 2), np.float32), frame)
        s.box = np.array([x, 0, x + 40, 100], np.float32)
        s.appearance = look
        return s

    # track 0: red for frames 0-3, then green (a swap); track 4: red again from frame 6 on, with
    # one green frame in the middle (keypoints on someone crossing)
    t0 = [sample(f, 10 * f, red) for f in range(4)] + [sample(f, 10 * f, green) for f in (4, 5)]
    t4 = [sample(f, 10 * f, green if f == 8 else red) for f in range(6, 11)]
    tracks, dropped, cuts, joins = regroup_tracks({0: t0, 4: t4}, 0.35, 0.2)
    assert (cuts, joins) == (1, 1)
    assert [s.frame for s in tracks[0]] == [0, 1, 2, 3, 6, 7, 9, 10]  # red, joined over the gap
    assert [s.frame for s in tracks[5]] == [4, 5]  # the green part: a new id above the tracker's
    assert sorted(tracks) == [0, 5]
    assert [(s.frame, t) for s, t, _ in dropped] == [(8, 4)]
    assert dropped[0][2].startswith("looks like someone else: appearance distance > 0.35")
    same = regroup_tracks({0: t0, 4: t4}, 0, 0)
    assert same == ({0: t0, 4: t4}, [], 0, 0)  # both off: the tracker's tracks as they were
