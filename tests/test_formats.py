"""Exchange formats: Def-GAN annotation CSV, pairs CSV, OpenPose JSON."""

import json

import numpy as np
import pytest

from pg2kit.formats import (
    FormatError,
    read_defgan_annotations,
    read_openpose_json,
    read_pairs_csv,
    write_defgan_annotations,
    write_pairs_csv,
)

Y0 = [48, 57, 57, 68, 78, 56, -1, -1, 80, 93, 109, 79, -1, -1, 46, 45, 47, -1]
X0 = [32, 31, 22, 17, 18, 40, -1, -1, 27, 31, 35, 39, -1, -1, 30, 34, 26, -1]

# written out by hand (not with json.dumps) so the byte-exact test checks the real layout
GOOD = (
    "name:keypoints_y:keypoints_x\n"
    "0432_c5s1_105323_05.jpg: "
    "[48, 57, 57, 68, 78, 56, -1, -1, 80, 93, 109, 79, -1, -1, 46, 45, 47, -1]: "
    "[32, 31, 22, 17, 18, 40, -1, -1, 27, 31, 35, 39, -1, -1, 30, 34, 26, -1]\n"
    "0002_c1s1_000451_03.jpg: "
    "[-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]: "
    "[-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]\n"
)


def test_defgan_read_values(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(GOOD.encode())
    table = read_defgan_annotations(path)
    assert table.names == ["0432_c5s1_105323_05.jpg", "0002_c1s1_000451_03.jpg"]
    assert table.keypoints.dtype == np.float32 and table.keypoints.shape == (2, 18, 2)
    np.testing.assert_array_equal(table.keypoints[0, :, 0], X0)  # x = column
    np.testing.assert_array_equal(table.keypoints[0, :, 1], Y0)
    assert (table.keypoints[1] == -1).all()


def test_defgan_round_trip_byte_exact(tmp_path):
    src, dst = tmp_path / "a.csv", tmp_path / "b.csv"
    src.write_bytes(GOOD.encode())
    table = read_defgan_annotations(src)
    write_defgan_annotations(dst, table.names, table.keypoints)
    assert dst.read_bytes() == GOOD.encode()
    assert not (tmp_path / "b.csv.tmp").exists()


def test_defgan_x_first_header(tmp_path):
    path = tmp_path / "old.csv"
    row = f"a.jpg: {json.dumps(X0)}: {json.dumps(Y0)}\n"
    path.write_text("name:keypoints_x:keypoints_y\n" + row)
    kp = read_defgan_annotations(path).keypoints[0]
    np.testing.assert_array_equal(kp[:, 0], X0)
    np.testing.assert_array_equal(kp[:, 1], Y0)


def test_defgan_write_rounds_and_marks_missing(tmp_path):
    kp = np.full((1, 18, 2), -1, np.float32)
    kp[0, 0] = (10.5, 3.4)  # halves round up
    kp[0, 1] = (7.6, -0.2)  # a negative coordinate means missing
    path = tmp_path / "r.csv"
    write_defgan_annotations(path, ["r.jpg"], kp)
    line = path.read_text().splitlines()[1]
    assert line.startswith("r.jpg: [3, -1, -1,") and ": [11, -1, -1," in line


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("name:kp_y:kp_x\n", 1, "header"),
        (GOOD + "bad.jpg: [1, 2, 3]: " + json.dumps(X0) + "\n", 4, "3 values"),
        (GOOD + "bad.jpg: " + json.dumps(Y0).replace("48", '"a"') + ": [1]\n", 4, "non-numeric"),
        (GOOD.replace("[48, 57", "[x8, 57"), 2, "not a list"),
        (GOOD + "only_a_name.jpg\n", 4, "3 ':'-separated fields"),
        (GOOD + "n.jpg: " + json.dumps(Y0) + "\n", 4, "3 ':'-separated fields"),
        ("", 1, "empty"),
    ],
)
def test_defgan_errors_name_the_line(tmp_path, text, line, words):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        read_defgan_annotations(path)
    msg = str(info.value)
    assert str(path) in msg and f"line {line}" in msg and words in msg
    assert "\n" not in msg


def test_pairs_csv_round_trip_and_header(tmp_path):
    path = tmp_path / "p.csv"
    pairs = [("a.jpg", "b.jpg"), ("b.jpg", "a.jpg")]
    write_pairs_csv(path, pairs)
    assert path.read_bytes() == b"from,to\na.jpg,b.jpg\nb.jpg,a.jpg\n"
    assert read_pairs_csv(path) == pairs
    path.write_text("src,dst\na,b\n")
    with pytest.raises(FormatError, match="line 1"):
        read_pairs_csv(path)
    path.write_text("from,to\na,b\nc\n")
    with pytest.raises(FormatError, match="line 3"):
        read_pairs_csv(path)


def _person(n_parts, parts):
    """Flat x,y,c list with parts {index: (x, y, c)}, others zero."""
    flat = [0.0] * (3 * n_parts)
    for i, (x, y, c) in parts.items():
        flat[3 * i : 3 * i + 3] = [x, y, c]
    return {"pose_keypoints_2d": flat}


def test_openpose_body25_picks_best_person_and_maps_hips(tmp_path):
    weak = _person(25, {0: (5, 5, 0.3), 1: (6, 6, 0.3), 2: (7, 7, 0.3)})
    # BODY_25: 8 MidHip (dropped), 9 RHip -> COCO 8, 12 LHip -> COCO 11, 18 LEar -> COCO 17
    strong = _person(25, {0: (10, 20, 0.9), 8: (1, 1, 0.9), 9: (30, 40, 0.8), 12: (50, 60, 0.7),
                          18: (70, 80, 0.6), 22: (2, 2, 0.9)})  # fmt: skip
    path = tmp_path / "img_keypoints.json"
    path.write_text(json.dumps({"version": 1.3, "people": [weak, strong]}))
    kp, sc = read_openpose_json(path)
    assert kp.shape == (18, 2) and sc.shape == (18,) and kp.dtype == sc.dtype == np.float32
    np.testing.assert_allclose(kp[0], (10, 20))
    np.testing.assert_allclose(kp[8], (30, 40))
    np.testing.assert_allclose(kp[11], (50, 60))
    np.testing.assert_allclose(kp[17], (70, 80))
    np.testing.assert_allclose(sc[[0, 8, 11, 17]], (0.9, 0.8, 0.7, 0.6))
    missing = np.ones(18, bool)
    missing[[0, 8, 11, 17]] = False
    assert (kp[missing] == -1).all() and (sc[missing] == 0).all()
    # outside a 60 x 60 image: LHip (50, 60) and LEar (70, 80) drop out
    kp, sc = read_openpose_json(path, width=60, height=60)
    assert (kp[11] == -1).all() and (kp[17] == -1).all() and sc[11] == 0
    assert kp[8, 0] == 30


def test_openpose_coco18_tie_goes_to_more_parts(tmp_path):
    one = _person(18, {0: (1, 2, 0.5)})
    two = _person(18, {0: (3, 4, 0.5), 5: (6, 7, 0.5)})
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"people": [one, two]}))
    kp, _ = read_openpose_json(path)
    np.testing.assert_allclose(kp[[0, 5]], [(3, 4), (6, 7)])
    path.write_text(json.dumps({"people": [{"pose_keypoints": two["pose_keypoints_2d"]}, one]}))
    assert read_openpose_json(path)[0][5, 0] == 6  # older key name


def test_openpose_no_people_and_bad_length(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"people": []}))
    kp, sc = read_openpose_json(path)
    assert (kp == -1).all() and (sc == 0).all()
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": [0.0] * 60}]}))
    with pytest.raises(FormatError, match="60 values"):
        read_openpose_json(path)
    path.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_openpose_json(path)


def test_pairs_csv_with_bom(tmp_path):
    from pg2kit.formats import read_pairs_csv

    p = tmp_path / "p.csv"
    p.write_bytes(b"\xef\xbb\xbffrom,to\na.jpg,b.jpg\n")
    assert read_pairs_csv(p) == [("a.jpg", "b.jpg")]


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"people": [7]}, "person 0 is not a JSON object"),
        ({"people": [{"pose_keypoints_2d": "abc"}]}, "is not a list"),
        ({"people": [{"pose_keypoints_2d": [1, 2, "x"] * 18}]}, "not x,y,c numbers"),
        ([], "no 'people' list"),
    ],
)
def test_openpose_malformed_is_format_error(tmp_path, doc, message):
    import json

    from pg2kit.formats import FormatError, read_openpose_json

    p = tmp_path / "x_keypoints.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=message):
        read_openpose_json(p)


def test_openpose_absurd_coordinates_missing(tmp_path):
    from pg2kit.formats import read_openpose_json

    flat = [10.0, 20.0, 0.9] * 18
    flat[0] = 1e300  # x of the nose
    flat[4] = float("nan")  # y of the neck
    text = json.dumps({"people": [{"pose_keypoints_2d": flat}]}).replace("1e+300", "9" * 400)
    p = tmp_path / "x_keypoints.json"
    p.write_text(text)
    kp, conf = read_openpose_json(p)
    assert (kp[:2] == -1).all() and (conf[:2] == 0).all() and (kp[2:] >= 0).all()


def test_sanitize_keypoints():
    from pg2kit.keypoints import sanitize_keypoints

    kp = np.full((2, 18, 2), 5.0)
    kp[0, 1, 0], kp[1, 2, 1], kp[1, 3, 0] = np.inf, 2e6, -1
    out, dropped = sanitize_keypoints(kp)
    assert dropped == 2 and out.dtype == np.float32
    assert (out[0, 1] == -1).all() and (out[1, 2] == -1).all() and out[1, 4, 0] == 5
