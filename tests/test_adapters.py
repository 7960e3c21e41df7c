"""Tests for the dataset adapters (Market-1501, DeepFashion, own-photo folders) on tiny fake trees."""

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from pg2kit.datasets.base import Adapter, AdapterError, NoPersonError, Record, clip_keypoints
from pg2kit.datasets.deepfashion import DeepFashion, flatten_name, parse_flat_name
from pg2kit.datasets.folder import Folder
from pg2kit.datasets.market1501 import Market1501
from pg2kit.keypoints import OPENPOSE_COLORS


def _img(path: Path, h: int = 128, w: int = 64, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def _record(path: Path) -> Record:
    return Record(name=path.name, path=path, rel_path=path.name, split="train", identity="x")


# ---------------------------------------------------------------- Market-1501


@pytest.fixture
def market(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    _img(root / "bounding_box_train" / "0002_c1s1_000451_03.jpg")
    _img(root / "bounding_box_train" / "0007_c2s3_070952_01.PNG")
    _img(root / "bounding_box_test" / "-1_c3s2_000100_01.jpg")
    _img(root / "bounding_box_test" / "0000_c6s1_000001_02.jpg")
    _img(root / "bounding_box_test" / "0003_c1s1_000100_01.jpg")
    _img(root / "bounding_box_test" / "badname.jpg")
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0" * 10)
    return root


def test_market_scan(market):
    res = Market1501().scan(market)
    assert sorted(res.records) == ["test", "train"]
    train = res.records["train"]
    assert [r.name for r in train] == ["0002_c1s1_000451_03.jpg", "0007_c2s3_070952_01.PNG"]
    r = train[0]
    assert (r.identity, r.camera, r.sequence, r.frame) == ("0002", 1, 1, 451)
    assert r.rel_path == "bounding_box_train/0002_c1s1_000451_03.jpg"
    assert r.path.is_absolute() and r.path.is_file() and r.split == "train"
    assert not r.junk and not r.distractor
    test = {r.name: r for r in res.records["test"]}
    assert set(test) == {
        "-1_c3s2_000100_01.jpg",
        "0000_c6s1_000001_02.jpg",
        "0003_c1s1_000100_01.jpg",
    }
    junk = test["-1_c3s2_000100_01.jpg"]
    assert junk.junk and not junk.distractor and junk.identity == "-1" and junk.camera == 3
    dis = test["0000_c6s1_000001_02.jpg"]
    assert dis.distractor and not dis.junk and dis.camera == 6
    assert not test["0003_c1s1_000100_01.jpg"].junk
    assert [p for p, _ in res.failures] == ["bounding_box_test/badname.jpg"]
    assert "does not match" in res.failures[0][1]
    assert any("query/ absent" in n for n in res.notes)
    assert any("Thumbs.db" in n for n in res.notes)


def test_market_wrong_layout(tmp_path, market):
    with pytest.raises(AdapterError, match="does not exist"):
        Market1501().scan(tmp_path / "nothing")  # does not exist
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AdapterError, match="bounding_box_train, bounding_box_test, query"):
        Market1501().scan(empty)
    # The parent of the real root: the error points at it.
    with pytest.raises(AdapterError, match="did you mean .*Market-1501-v15.09.15"):
        Market1501().scan(market.parent)


def test_market_only_bad_names_is_an_error(tmp_path):
    _img(tmp_path / "query" / "hello.jpg")
    with pytest.raises(AdapterError, match="hello.jpg"):
        Market1501().scan(tmp_path)


def test_market_load_and_finalize(tmp_path):
    ad = Market1501()
    assert ad.frame == (128, 64, 0)
    native = np.random.RandomState(0).randint(0, 256, (128, 64, 3), dtype=np.uint8)
    p = tmp_path / "0002_c1s1_000451_03.png"
    cv2.imwrite(str(p), native[:, :, ::-1])
    np.testing.assert_array_equal(ad.load(_record(p)), native)
    big = _img(tmp_path / "0002_c1s1_000452_03.jpg", 256, 128)
    assert ad.load(_record(big)).shape == (128, 64, 3)
    kp = np.full((18, 2), -1, np.float32)
    sc = np.zeros(18, np.float32)
    kp[0], sc[0] = (10.2, 20.7), 0.9
    kp[1], sc[1] = (70.0, 20.0), 0.8  # right of the 64-wide image
    kp[2], sc[2] = (-0.3, 5.0), 0.7  # rounds to column 0: kept, clamped
    img, kp2, sc2 = ad.finalize(native, kp, sc)
    assert img is native
    np.testing.assert_allclose(kp2[0], (10.2, 20.7))
    np.testing.assert_array_equal(kp2[1], (-1, -1))
    assert sc2[1] == 0 and sc2[0] == pytest.approx(0.9)
    np.testing.assert_allclose(kp2[2], (0.0, 5.0))
    with pytest.raises(ValueError):
        ad.finalize(np.zeros((64, 64, 3), np.uint8), kp, sc)


# ---------------------------------------------------------------- DeepFashion names


@pytest.mark.parametrize(
    "rel,flat",
    [
        ("img/WOMEN/Blouses_Shirts/id_00006370/03_1_front.jpg",
         "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg"),
        ("img/MEN/Tees_Tanks/id_00000080/01_7_additional.jpg",
         "fashionMENTees_Tanksid0000008001_7additional.jpg"),
        ("WOMEN/Dresses/id_00000002/02_4_full.png", "fashionWOMENDressesid0000000202_4full.png"),
        ("img_highres/MEN/Sweatshirts_Hoodies/id_00001234/04_2_side.jpg",
         "fashionMENSweatshirts_Hoodiesid0000123404_2side.jpg"),
    ],
)  # fmt: skip
def test_flatten_and_parse_round_trip(rel, flat):
    assert flatten_name(rel) == flat
    gender, category, item, fname = parse_flat_name(flat)
    parts = rel.split("/")
    assert (gender, category, item, fname) == tuple(parts[-4:])
    misspelt = "fasion" + flat[len("fashion") :]
    assert parse_flat_name(misspelt) == (gender, category, item, fname)


@pytest.mark.parametrize(
    "bad", ["0002_c1s1_000451_03.jpg", "fashionKIDSDressesid0000000202_4full.jpg",
            "fashionWOMENDressesid000002_4full.jpg", "fashionWOMENid0000000202_4full.jpg"],
)  # fmt: skip
def test_parse_flat_name_rejects(bad):
    with pytest.raises(ValueError):
        parse_flat_name(bad)


def test_flatten_rejects_bad_paths():
    with pytest.raises(ValueError):
        flatten_name("img/KIDS/Dresses/id_00000002/02_4_full.jpg")
    with pytest.raises(ValueError):
        flatten_name("img/WOMEN/Dresses/00000002/02_4_full.jpg")
    with pytest.raises(ValueError):
        flatten_name("02_4_full.jpg")


# ---------------------------------------------------------------- DeepFashion layouts

INSHOP = [
    "img/WOMEN/Blouses_Shirts/id_00006370/03_1_front.jpg",
    "img/WOMEN/Blouses_Shirts/id_00006370/03_2_side.jpg",
    "img/MEN/Tees_Tanks/id_00000080/01_1_front.jpg",
    "img/WOMEN/Dresses/id_00000002/02_4_full.jpg",
    "img/WOMEN/Dresses/id_00000002/02_7_additional.jpg",  # in no split
]


@pytest.fixture
def inshop(tmp_path):
    root = tmp_path / "In-shop"
    for rel in INSHOP:
        _img(root / rel, 256, 256)
    _img(root / "img/WOMEN/Dresses/id_00000002/weird.jpg", 256, 256)
    return root


def _write_partition(root: Path) -> None:
    (root / "Eval").mkdir()
    rows = [
        (INSHOP[0], "id_00006370", "train"),
        (INSHOP[1], "id_00006370", "train"),
        (INSHOP[2], "id_00000080", "query"),
        (INSHOP[3], "id_00000002", "gallery"),
    ]
    text = f"{len(rows)}\nimage_name item_id evaluation_status\n"
    text += "".join(f"{a}   {b}   {c}\n" for a, b, c in rows)
    (root / "Eval" / "list_eval_partition.txt").write_text(text)


def test_deepfashion_inshop_partition(inshop):
    _write_partition(inshop)
    res = DeepFashion().scan(inshop)
    train = res.records["train"]
    assert [r.name for r in train] == [
        "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg",
        "fashionWOMENBlouses_Shirtsid0000637003_2side.jpg",
    ]
    assert train[0].identity == "id_00006370"
    assert train[0].rel_path == INSHOP[0]
    assert [(r.name, r.identity) for r in res.records["test"]] == [
        ("fashionMENTees_Tanksid0000008001_1front.jpg", "id_00000080"),
        ("fashionWOMENDressesid0000000202_4full.jpg", "id_00000002"),
    ]
    assert [p for p, _ in res.failures] == ["img/WOMEN/Dresses/id_00000002/weird.jpg"]
    assert any("query" in n and "gallery" in n for n in res.notes)
    assert any("1 image(s) are in no split" in n for n in res.notes)


def test_deepfashion_inshop_lst_overrides_partition(inshop):
    _write_partition(inshop)
    (inshop / "train.lst").write_text(
        "fashionMENTees_Tanksid0000008001_1front.jpg\n"
        "fasionWOMENDressesid0000000202_4full.jpg\n"  # misspelt prefix still matches
    )
    (inshop / "test.lst").write_text(
        "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg\n"
        "fashionWOMENSkirtsid0000999901_1front.jpg\n"  # no such file
    )
    res = DeepFashion().scan(inshop)
    assert [r.name for r in res.records["train"]] == [
        "fashionMENTees_Tanksid0000008001_1front.jpg",
        "fashionWOMENDressesid0000000202_4full.jpg",
    ]
    assert [r.name for r in res.records["test"]] == [
        "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg"
    ]
    assert any("pose-transfer" in n for n in res.notes)
    assert any("1 listed name(s) have no image file" in n for n in res.notes)
    assert any("2 image(s) are in no split" in n for n in res.notes)


def test_deepfashion_flat_layout(tmp_path):
    root = tmp_path / "fashion_data"
    train_names = [
        "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg",
        "fasionMENJackets_Vestsid0000401403_3back.jpg",
    ]
    test_names = ["fashionWOMENDressesid0000000202_4full.jpg", "not_a_fashion_name.jpg"]
    for n in train_names:
        _img(root / "train" / n, 256, 256)
    for n in test_names:
        _img(root / "test" / n, 256, 256)
    _img(root / "test" / "fashionWOMENDressesid0000000299_1front.jpg", 256, 256)  # unlisted
    (root / "train.lst").write_text("\n".join(train_names) + "\n")
    (root / "test.lst").write_text(
        "\n".join([*test_names, "fashionMENDenimid0000000101_1front.jpg"])
    )
    res = DeepFashion().scan(root)
    train = res.records["train"]
    assert [r.name for r in train] == sorted(train_names)
    assert {r.identity for r in train} == {"id_00006370", "id_00004014"}
    assert train[0].rel_path.startswith("train/")
    assert [r.name for r in res.records["test"]] == [test_names[0]]
    assert [p for p, _ in res.failures] == ["test/not_a_fashion_name.jpg"]
    assert any("1 listed name(s) have no image file" in n for n in res.notes)
    assert any("1 image(s) are in no .lst" in n for n in res.notes)


def test_deepfashion_wrong_layouts(tmp_path, inshop):
    with pytest.raises(AdapterError, match="no split file"):
        DeepFashion().scan(inshop)  # img/ but neither partition nor .lst
    with pytest.raises(AdapterError, match="pass the folder that holds it"):
        DeepFashion().scan(inshop / "img")
    other = tmp_path / "other"
    _img(other / "a.jpg")
    with pytest.raises(AdapterError, match="not a DeepFashion source"):
        DeepFashion().scan(other)


def test_deepfashion_load_fits_highres(tmp_path):
    # img_highres is 750 wide x 1101 high: scaled to height 256 and padded with white.
    p = _img(tmp_path / "hi.jpg", 1101, 750, value=0)
    out = DeepFashion().load(_record(p))
    assert out.shape == (256, 256, 3)
    assert (out[:, :38] == 255).all() and (out[:, -38:] == 255).all()
    assert (out[:, 50:200] < 10).all()


def test_deepfashion_finalize_crop176():
    full = DeepFashion()
    crop = DeepFashion(crop176=True)
    assert full.frame == (256, 256, 0) and crop.frame == (256, 176, 40)
    image = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 256, 0).repeat(3, 2)
    kp = np.full((18, 2), -1, np.float32)
    sc = np.zeros(18, np.float32)
    kp[0], kp[1], kp[2], kp[3] = (50, 100), (20, 30), (230, 40), (215.2, 7)
    sc[:4] = 1
    out, kp2, sc2 = crop.finalize(image, kp, sc)
    assert out.shape == (256, 176, 3)
    assert out[0, 0, 0] == 40 and out[0, -1, 0] == 215
    np.testing.assert_allclose(kp2[0], (10, 100))
    np.testing.assert_array_equal(kp2[1:3], -1)  # left and right of the crop
    np.testing.assert_allclose(kp2[3], (175, 7))
    assert list(sc2[:4]) == [1, 0, 0, 1]
    np.testing.assert_array_equal(kp2[4:], -1)  # missing stays missing
    out_full, kp_full, _ = full.finalize(image, kp, sc)
    assert out_full.shape == (256, 256, 3)
    np.testing.assert_allclose(kp_full[:4], kp[:4])


# ---------------------------------------------------------------- folder: scan


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    _img(root / "alice" / "IMG_0001.JPG", 300, 200)
    _img(root / "alice" / "IMG_0002.png", 300, 200)
    _img(root / "bob" / "trip" / "x.jpg", 300, 200)
    _img(root / "carol smith" / "a photo.jpg", 300, 200)
    (root / "empty").mkdir()
    (root / ".cache").mkdir()
    _img(root / ".cache" / "z.jpg")
    _img(root / "loose.jpg")
    return root


def test_folder_scan(photos):
    res = Folder().scan(photos)
    assert list(res.records) == ["train"]
    recs = res.records["train"]
    assert [(r.name, r.identity) for r in recs] == [
        ("alice_IMG_0001.JPG", "alice"),
        ("alice_IMG_0002.png", "alice"),
        ("bob_trip_x.jpg", "bob"),
        ("carol_smith_a_photo.jpg", "carol smith"),
    ]
    assert recs[2].rel_path == "bob/trip/x.jpg"
    assert any("1 image(s) directly" in n for n in res.notes)
    assert any("empty/ holds no images" in n for n in res.notes)


def test_folder_test_identities(photos):
    res = Folder(test_identities=["bob"]).scan(photos)
    assert [r.name for r in res.records["test"]] == ["bob_trip_x.jpg"]
    assert {r.identity for r in res.records["train"]} == {"alice", "carol smith"}
    a = Folder(test_identities=0.34, seed=3).scan(photos)
    b = Folder(test_identities=0.34, seed=3).scan(photos)
    assert len({r.identity for r in a.records["test"]}) == 1
    assert a.records == b.records  # deterministic
    with pytest.raises(AdapterError, match="dave"):
        Folder(test_identities=["dave"]).scan(photos)
    with pytest.raises(ValueError):
        Folder(test_identities=1.5)


def test_folder_errors(tmp_path):
    with pytest.raises(AdapterError, match="no images found"):
        Folder().scan(tmp_path)
    _img(tmp_path / "a.jpg")
    (tmp_path / "sub").mkdir()
    with pytest.raises(AdapterError, match="1 loose image"):
        Folder().scan(tmp_path)


def test_folder_name_clash_resolved(tmp_path):
    _img(tmp_path / "x" / "a_b.jpg")
    _img(tmp_path / "x" / "a" / "b.jpg")
    names = [r.name for r in Folder().scan(tmp_path).records["train"]]
    assert len(set(names)) == 2 and "x_a_b.jpg" in names


def test_folder_load_max_side(tmp_path):
    p = _img(tmp_path / "big.jpg", 400, 1000)
    assert Folder().load(_record(p)).shape == (400, 1000, 3)
    assert Folder(max_side=500).load(_record(p)).shape == (200, 500, 3)


# ---------------------------------------------------------------- folder: crop

# A standing figure (x, y) in a 500 x 800 photo; the nose below the eyes, ankles at the bottom.
FIGURE = np.array(
    [(300, 156), (300, 180), (270, 185), (262, 230), (256, 272), (330, 185), (338, 230),
     (344, 272), (282, 280), (280, 350), (279, 420), (318, 280), (320, 350), (321, 420),
     (290, 140), (310, 140), (275, 150), (325, 150)],
    np.float32,
)  # fmt: skip


def _photo(kp: np.ndarray, h: int = 500, w: int = 800) -> np.ndarray:
    """Dark photo with a radius-5 disc of keypoint i's OpenPose colour at each keypoint."""
    img = np.full((h, w, 3), 40, np.uint8)
    for (x, y), colour in zip(kp, OPENPOSE_COLORS, strict=True):
        cv2.circle(img, (int(x), int(y)), 5, colour, -1)
    return img


def _assert_on_discs(out: np.ndarray, kp: np.ndarray) -> None:
    palette = np.array(OPENPOSE_COLORS, float)
    for i, (x, y) in enumerate(kp):
        assert x >= 0 and y >= 0, f"keypoint {i} lost"
        px = out[int(round(y)), int(round(x))].astype(float)
        nearest = int(np.argmin(((palette - px) ** 2).sum(1)))
        assert nearest == i and np.abs(px - palette[i]).max() < 40, (i, px)


def test_folder_crop_maps_keypoints_onto_the_figure():
    photo = _photo(FIGURE)
    sc = np.ones(18, np.float32)
    out, kp, sc2 = Folder(size=(256, 256)).finalize(photo, FIGURE, sc)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    _assert_on_discs(out, kp)
    assert (sc2 == 1).all()
    # Head room above the eyes and room below the ankles; figure centred horizontally.
    assert kp[14:16, 1].min() > 0.08 * 256
    assert kp[[10, 13], 1].max() < 0.92 * 256
    assert abs((kp[:, 0].min() + kp[:, 0].max()) / 2 - 127.5) < 2
    # The figure is taller than wide, so its height sets the scale: it fills most of the frame.
    assert kp[:, 1].max() - kp[:, 1].min() > 0.7 * 256


def test_folder_crop_aspect_and_uniform_scale():
    photo = _photo(FIGURE)
    out, kp, _ = Folder(size=(128, 64)).finalize(photo, FIGURE, np.ones(18, np.float32))
    assert out.shape == (128, 64, 3)
    _assert_on_discs(out, kp)
    sx = np.ptp(kp[:, 0]) / np.ptp(FIGURE[:, 0])
    sy = np.ptp(kp[:, 1]) / np.ptp(FIGURE[:, 1])
    assert sx == pytest.approx(sy, rel=0.03)  # no stretching
    # A wide output frame: the figure is centred with space at the sides.
    _, kp_wide, _ = Folder(size=(100, 300)).finalize(photo, FIGURE, np.ones(18, np.float32))
    assert kp_wide[:, 0].min() > 100 and kp_wide[:, 0].max() < 200


def test_folder_crop_pads_outside_the_photo():
    shifted = FIGURE - np.array([220, 100], np.float32)  # head near the top-left corner
    photo = _photo(shifted)
    ad = Folder(size=(256, 256), pad="constant", pad_value=(0, 255, 0))
    out, kp, _ = ad.finalize(photo, shifted, np.ones(18, np.float32))
    _assert_on_discs(out, kp)
    assert tuple(out[0, 0]) == (0, 255, 0)
    out_edge, kp_edge, _ = Folder(size=(256, 256), pad="edge").finalize(
        photo, shifted, np.ones(18, np.float32)
    )
    assert tuple(out_edge[0, 0]) == (40, 40, 40)  # replicated border of the dark photo
    np.testing.assert_allclose(kp_edge, kp)


def test_folder_crop_drops_keypoints_outside_photo_and_no_person():
    kp = FIGURE.copy()
    sc = np.ones(18, np.float32)
    kp[10] = (279, 560)  # below the 500-high photo (an estimator's guess)
    kp[4] = (-1, -1)
    sc[4] = 0
    _, out_kp, out_sc = Folder().finalize(_photo(FIGURE), kp, sc)
    assert (out_kp[[4, 10]] == -1).all() and out_sc[10] == 0 and out_sc[4] == 0
    assert (out_kp[np.r_[0:4, 5:10, 11:18]] >= 0).all()
    empty = np.full((18, 2), -1, np.float32)
    with pytest.raises(NoPersonError, match="no person found"):
        Folder().finalize(_photo(FIGURE), empty, np.zeros(18, np.float32))
    outside = FIGURE + 1000
    with pytest.raises(NoPersonError):
        Folder().finalize(_photo(FIGURE), outside, np.ones(18, np.float32))


def test_folder_crop_few_keypoints():
    # Only a nose and the eyes: still a sensible crop, no exception.
    kp = np.full((18, 2), -1, np.float32)
    kp[[0, 14, 15]] = FIGURE[[0, 14, 15]]
    out, kp2, _ = Folder(size=(64, 64)).finalize(_photo(FIGURE), kp, np.ones(18, np.float32))
    assert out.shape == (64, 64, 3) and (kp2[[0, 14, 15]] >= 0).all()


# ---------------------------------------------------------------- shared


def test_adapters_are_picklable_protocol_objects():
    for ad in (
        Market1501(),
        DeepFashion(crop176=True),
        Folder(size=(128, 64), test_identities=["a"]),
    ):
        assert isinstance(ad, Adapter)
        back = pickle.loads(pickle.dumps(ad))
        assert back == ad and back.frame == ad.frame
    assert Folder(test_identities=["b", "a"]).test_identities == ("a", "b")


def test_clip_keypoints_boundaries():
    kp = np.array([[-0.6, 5], [-0.4, 5], [63.4, 5], [63.6, 5], [-1, -1]], np.float32)
    sc = np.ones(5, np.float32)
    out, s = clip_keypoints(kp, sc, 128, 64)
    assert list(s) == [0, 1, 1, 0, 0]
    np.testing.assert_allclose(out[1], (0, 5))
    np.testing.assert_allclose(out[2], (63, 5))
