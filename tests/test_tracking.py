"""pg2kit.tracking: ids stay with their person through moving, crossing and short gaps."""

from __future__ import annotations

import numpy as np
import pytest

from pg2kit.tracking import (
    Tracker,
    TrackPiece,
    appearance,
    appearance_distance,
    iou_matrix,
    join_tracks,
    split_by_appearance,
    track,
)


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


# a standing person in a 128 x 64 crop: x, y of the 18 keypoints (OpenPose order)
STAND = np.array([[32, 14], [32, 26], [22, 27], [18, 45], [17, 62], [42, 27], [46, 45],
                  [47, 62], [26, 62], [26, 88], [26, 114], [38, 62], [38, 88], [38, 114],
                  [30, 12], [34, 12], [28, 13], [36, 13]], np.float32)  # fmt: skip


def _person(shirt, trousers, noise=0, seed=0, background=(90, 90, 90)):
    """A crop painted with a shirt colour above the hips and a trousers colour below."""
    rng = np.random.default_rng(seed)
    img = np.empty((128, 64, 3), np.uint8)
    img[:] = background
    img[20:62, 14:50] = shirt
    img[62:120, 20:44] = trousers
    jitter = rng.integers(-noise, noise + 1, img.shape) if noise else 0
    return np.clip(img.astype(int) + jitter, 0, 255).astype(np.uint8)


RED_BLUE = ((200, 40, 40), (40, 40, 160))
GREEN_BLACK = ((40, 170, 60), (25, 25, 25))


def test_appearance_tells_clothes_apart():
    # (every crop has camera noise: a noise-free flat colour at a bin edge would count as
    # another colour next to a noisy one)
    a = appearance(_person(*RED_BLUE, noise=6), STAND)
    assert a.shape == (2, 144) and np.allclose(a.sum(1), 1)
    same = appearance(_person(*RED_BLUE, noise=6, seed=1), STAND + 1.5)  # moved a little
    other = appearance(_person(*GREEN_BLACK, noise=6, seed=2), STAND)
    shirt_only = appearance(_person(RED_BLUE[0], GREEN_BLACK[1], noise=6, seed=3), STAND)
    assert appearance_distance(a, a) == pytest.approx(0, abs=1e-3)
    assert appearance_distance(a, same) < 0.2
    assert appearance_distance(a, other) > 0.6
    # upper and lower body count apart: the same shirt halves the distance
    assert 0.2 < appearance_distance(a, shirt_only) < appearance_distance(a, other)
    # no keypoints: flat histograms, no crash
    flat = appearance(_person(*RED_BLUE), np.full((18, 2), -1, np.float32))
    assert np.allclose(flat, 1 / 144)


def test_split_by_appearance_cuts_a_change_and_drops_a_lone_odd_frame():
    a = [appearance(_person(*RED_BLUE, noise=6, seed=i), STAND) for i in range(8)]
    b = [appearance(_person(*GREEN_BLACK, noise=6, seed=i), STAND) for i in range(8)]
    assert split_by_appearance(a[:5] + b[:4], 0.35) == [0] * 5 + [1] * 4  # the person changed
    assert split_by_appearance(a[:3] + b[:1] + a[3:6], 0.35) == [0, 0, 0, -1, 0, 0, 0]
    assert split_by_appearance(a[:4] + b[:1], 0.35) == [0, 0, 0, 0, 1]  # last frame: a new part
    assert split_by_appearance(a[:3] + b[:3] + a[3:6], 0.35) == [0] * 3 + [1] * 3 + [2] * 3
    assert split_by_appearance(a[:3] + b[:3], 1.0) == [0] * 6  # threshold 1: never
    assert split_by_appearance([], 0.35) == []


def test_join_tracks_links_one_person_lost_and_found():
    def piece(colors, frames, x0, seed=0):
        boxes = np.array([_box(x0 + 5 * (f - frames[0]), 100) for f in frames], np.float64)
        descs = [appearance(_person(*colors, noise=6, seed=seed + f), STAND) for f in frames]
        return TrackPiece(list(frames), boxes, descs)

    red = piece(RED_BLUE, range(0, 6), 100)
    red_again = piece(RED_BLUE, range(10, 16), 150, seed=50)  # 10 frames later, 25 px further
    green = piece(GREEN_BLACK, range(10, 16), 150)
    assert join_tracks([red, red_again], 0.2) == [[0, 1]]
    assert join_tracks([red, green], 0.2) == [[0], [1]]  # other clothes
    assert join_tracks([red_again, red], 0.2) == [[1, 0]]  # chains in time order
    assert join_tracks([red, piece(RED_BLUE, range(3, 9), 110)], 0.2) == [[0], [1]]  # overlap
    far = piece(RED_BLUE, range(10, 16), 700)  # 600 px in 5 frames: another person
    assert join_tracks([red, far], 0.2) == [[0], [1]]
    assert join_tracks([red, red_again], 0.2, max_gap=4) == [[0], [1]]
    # two later candidates: only one is joined, the closer in appearance
    twin = piece(((200, 40, 40), (60, 60, 60)), range(12, 16), 160, seed=90)  # grey trousers
    assert join_tracks([red, twin], 0.5) == [[0, 1]]  # alone, it would be joined
    assert join_tracks([red, twin, red_again], 0.5) == [[0, 2], [1]]
    assert join_tracks([], 0.2) == []
