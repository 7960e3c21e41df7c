"""pg2kit.tracking: ids stay with their person through moving, crossing and short gaps."""

from __future__ import annotations

import numpy as np
import pytest

from pg2kit.tracking import Tracker, iou_matrix, track


def _box(cx, cy, w=40, h=100):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_allclose(m[1, 0], 0.25)


def test_two_people_crossing_keep_their_ids():
    # A walks right, B walks left at the same height; their boxes overlap for several frames.
    frames = []
    for f in range(40):
        a = _box(50 + 8 * f, 200)
        b = _box(370 - 8 * f, 205)
        order = [a, b] if f % 2 == 0 else [b, a]  # detection order must not matter
        frames.append((f, np.array(order), np.array([0.9, 0.8])))
    ids = track(frames)
    id_a = [ids[f][0] if f % 2 == 0 else ids[f][1] for f in range(40)]
    id_b = [ids[f][1] if f % 2 == 0 else ids[f][0] for f in range(40)]
    assert len(set(id_a)) == 1 and len(set(id_b)) == 1 and id_a[0] != id_b[0]


def test_gap_and_sampled_frames_keep_the_track():
    t = Tracker(max_gap=10)
    first = t.update(0, np.array([_box(100, 100)]), np.array([0.9]))
    t.update(3, np.zeros((0, 4)), np.zeros(0))  # missed in one frame
    again = t.update(6, np.array([_box(118, 100)]), np.array([0.9]))  # moved 18 px in 6 frames
    assert first[0] == again[0]
    later = t.update(30, np.array([_box(118, 100)]), np.array([0.9]))  # gap > max_gap: new id
    assert later[0] != first[0]


def test_low_scores_extend_but_never_start_tracks():
    t = Tracker(high_score=0.5)
    assert t.update(0, np.array([_box(100, 100)]), np.array([0.3]))[0] == -1
    start = t.update(1, np.array([_box(100, 100)]), np.array([0.9]))[0]
    assert t.update(2, np.array([_box(102, 100)]), np.array([0.3]))[0] == start


def test_starts_decide_which_boxes_may_start_a_track():
    """prepare video: a person who passed every gate starts a track at any detector score; a
    rejected candidate, even a confident one, only keeps an existing track alive."""
    t = Tracker(high_score=0.5)
    ids = t.update(0, np.array([_box(100, 100), _box(300, 100)]), np.array([0.35, 0.95]),
                   np.array([True, False]))  # fmt: skip
    assert ids[0] >= 0 and ids[1] == -1
    start = ids[0]
    # the accepted person, rejected in one frame, keeps its track (matched in the second round)
    assert t.update(1, np.array([_box(103, 100)]), np.array([0.9]), np.array([False]))[0] == start
    with pytest.raises(ValueError, match="starts"):
        t.update(2, np.array([_box(103, 100)]), np.array([0.9]), np.array([True, False]))


def test_bad_input():
    t = Tracker()
    t.update(5, np.zeros((0, 4)))
    with pytest.raises(ValueError, match="increase"):
        t.update(5, np.zeros((0, 4)))
    with pytest.raises(ValueError, match="scores"):
        t.update(6, np.zeros((2, 4)), np.ones(3))
    t.finish()
    t.update(0, np.zeros((0, 4)))  # a new video may start again at frame 0
