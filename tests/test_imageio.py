"""Tests for pg2kit.imageio: decoding odd and broken files, atomic saving."""

import io

import cv2
import numpy as np
import pytest

from pg2kit.imageio import ImageError, is_image_file, load_rgb, save_image


def _noise(h=48, w=32, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8)


def test_jpeg_is_rgb_order(tmp_path):
    bgr = np.zeros((40, 20, 3), np.uint8)
    bgr[:, :, 2] = 250  # red in cv2's BGR order
    p = tmp_path / "red.jpg"
    cv2.imwrite(str(p), bgr)
    rgb = load_rgb(p)
    assert rgb.shape == (40, 20, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].mean() > 240 and rgb[..., 2].mean() < 10


def test_png_round_trip_exact(tmp_path):
    rgb = _noise()
    p = tmp_path / "a.PNG"  # upper-case extension
    cv2.imwrite(str(p), rgb[:, :, ::-1])
    np.testing.assert_array_equal(load_rgb(p), rgb)


def test_grayscale_becomes_three_channels(tmp_path):
    gray = np.arange(30 * 20, dtype=np.uint8).reshape(30, 20)
    p = tmp_path / "g.png"
    cv2.imwrite(str(p), gray)
    out = load_rgb(p)
    assert out.shape == (30, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_composited_on_white(tmp_path):
    bgra = np.zeros((4, 3, 4), np.uint8)
    bgra[..., 0] = 200  # blue
    bgra[0, :, 3] = 0  # transparent row
    bgra[1, :, 3] = 255  # opaque row
    bgra[2, :, 3] = 128  # half
    p = tmp_path / "t.png"
    cv2.imwrite(str(p), bgra)
    out = load_rgb(p).astype(int)
    assert out.shape == (4, 3, 3)
    assert (out[0] == 255).all()  # white where fully transparent
    assert (out[1] == [0, 0, 200]).all()
    a = 128 / 255
    np.testing.assert_allclose(
        out[2, 0], [255 * (1 - a), 255 * (1 - a), 200 * a + 255 * (1 - a)], atol=1
    )


def test_16bit_scaled_to_8bit(tmp_path):
    img16 = np.zeros((5, 6, 3), np.uint16)
    img16[0] = 65535
    img16[1] = 257 * 100
    p = tmp_path / "deep.png"
    cv2.imwrite(str(p), img16)
    out = load_rgb(p)
    assert out.dtype == np.uint8
    assert (out[0] == 255).all() and (out[1] == 100).all() and (out[2] == 0).all()
    g16 = np.full((3, 3), 257 * 7, np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    assert (load_rgb(tmp_path / "g16.png") == 7).all()


def test_zero_byte(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_rgb(p)


def test_truncated_jpeg(tmp_path):
    ok, enc = cv2.imencode(".jpg", _noise(128, 96))
    data = enc.tobytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated JPEG"):
        load_rgb(p)
    # Bytes after the end-of-image marker (seen in the wild) are not truncation.
    p.write_bytes(data + b"\x00" * 16)
    assert load_rgb(p).shape == (128, 96, 3)


def test_truncated_png(tmp_path):
    ok, enc = cv2.imencode(".png", _noise(64, 64))
    data = enc.tobytes()
    p = tmp_path / "cut.png"
    p.write_bytes(data[: len(data) - 20])
    with pytest.raises(ImageError, match="truncated PNG"):
        load_rgb(p)


def test_text_file_named_jpg(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="text"):
        load_rgb(p)


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.png"
    p.write_bytes(np.random.RandomState(1).randint(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="not an image"):
        load_rgb(p)


def test_corrupt_png_body(tmp_path):
    ok, enc = cv2.imencode(".png", _noise(64, 64))
    data = bytearray(enc.tobytes())
    # Overwrite the IDAT payload but keep the chunk structure: not truncated, yet undecodable.
    start = data.find(b"IDAT") + 4
    data[start : start + 200] = bytes(200)
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError):
        load_rgb(p)


def test_missing_and_directory(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_rgb(tmp_path)


def test_pillow_fallback_palette_and_gif(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:, :4] = (255, 0, 0)
    rgb[:, 4:] = (0, 0, 255)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "p.png"), rgb)
    Image.fromarray(rgb).convert("P").save(tmp_path / "g.gif")  # cv2 cannot decode GIF
    np.testing.assert_array_equal(load_rgb(tmp_path / "g.gif"), rgb)


def test_jpeg_exif_orientation_applied(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    im = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    p = tmp_path / "phone.jpg"
    p.write_bytes(buf.getvalue())
    assert load_rgb(p).shape == (40, 20, 3)


def test_save_image_atomic_round_trip(tmp_path):
    rgb = _noise(10, 12)
    p = tmp_path / "sub" / "x.png"
    save_image(p, rgb)
    np.testing.assert_array_equal(load_rgb(p), rgb)
    assert [q.name for q in p.parent.iterdir()] == ["x.png"]  # no temporary file left
    save_image(tmp_path / "x.jpg", rgb)
    assert load_rgb(tmp_path / "x.jpg").shape == (10, 12, 3)
    with pytest.raises(ValueError):
        save_image(tmp_path / "f.png", rgb.astype(np.float32))
    with pytest.raises(ValueError):
        save_image(tmp_path / "f.txt", rgb)


@pytest.mark.parametrize(
    "name,expected",
    [("a.JPG", True), ("b.jpeg", True), ("c.TiFf", True), ("d.webp", True), ("e.txt", False),
     ("Thumbs.db", False), (".hidden.jpg", False)],
)  # fmt: skip
def test_is_image_file(name, expected):
    assert is_image_file(name) is expected


def test_header_size_checked_before_decoding(tmp_path):
    from pg2kit.imageio import check_image_size, header_size

    p = tmp_path / "wide.png"
    cv2.imwrite(str(p), np.zeros((40, 300, 3), np.uint8))
    assert header_size(p) == (300, 40)
    assert check_image_size(p, max_pixels=12_000, min_side=32) == (300, 40)
    with pytest.raises(ImageError, match=r"image too large: 300x40 = 0.0 MP > --max-pixels"):
        check_image_size(p, max_pixels=11_999, min_side=32)
    with pytest.raises(
        ImageError, match=r"image too small: 300x40, shorter side < --min-image-px 41"
    ):
        check_image_size(p, max_pixels=None, min_side=41)
    # what Pillow cannot read is left to the decoder, which words the reason
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    assert header_size(tmp_path / "empty.jpg") is None
    assert check_image_size(tmp_path / "text.png") is None
