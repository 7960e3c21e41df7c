"""Robust image reading (any common file -> RGB uint8 HxWx3, or ImageError with a one-line reason)
and atomic image writing.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from pg2kit.atomic import write_bytes

# Extensions treated as images when scanning folders (compared lower-cased).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """A file that cannot be used as an image; str(error) is a one-line reason."""


def is_image_file(path: str | Path) -> bool:
    """True if `path` has one of IMAGE_EXTENSIONS (case-insensitive) and is not a hidden file."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def sniff_format(data: bytes) -> str | None:
    """Container format from the file's magic bytes: 'jpeg', 'png', 'bmp', 'webp', 'tiff', 'gif'."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == _PNG_SIGNATURE:
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def _jpeg_truncated(data: bytes) -> bool:
    # The main image's end-of-image marker (FFD9) must follow its last start-of-scan (FFDA).
    # Comparing the *last* of each keeps an EXIF thumbnail's own FFD9 from hiding a cut file.
    # Neither marker can occur inside entropy-coded data (0xFF is byte-stuffed there).
    return data.rfind(b"\xff\xd9") < max(data.rfind(b"\xff\xda"), 2)


def _png_truncated(data: bytes) -> bool:
    # Walk the chunk headers (4-byte length, 4-byte type, data, 4-byte CRC) up to IEND.
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            return True
        if data[pos + 4 : pos + 8] == b"IEND":
            return False
        pos = end
    return True


def _to_rgb8(img: np.ndarray, bgr: bool) -> np.ndarray:
    """Any decoded array (HxW, HxWx1..4; uint8/uint16/float) -> RGB uint8 HxWx3.

    Alpha is composited onto white: pixels under full transparency hold arbitrary colours (often
    black), and white matches the studio backgrounds of the fashion data.
    """
    # Fast paths for the common 8-bit cases (cvtColor is ~100x faster than a strided numpy copy).
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 0:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if bgr else np.ascontiguousarray(img)
    if img.dtype == np.uint8 and img.ndim == 2 and min(img.shape) > 0:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"unsupported image shape {img.shape}")
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    elif img.dtype in (np.float32, np.float64, np.float16):
        scale = 1.0  # float images are taken to be in [0, 1]
    else:
        raise ImageError(f"unsupported sample type {img.dtype}")
    channels = img.shape[2]
    colour = img[:, :, :3] if channels >= 3 else img[:, :, :1]
    alpha = img[:, :, channels - 1 : channels] if channels in (2, 4) else None
    if bgr and channels >= 3:
        colour = colour[:, :, ::-1]
    if alpha is None and img.dtype == np.uint8:
        out = colour
    else:
        # Work in [0, 1] floats: 16-bit data is scaled to 8 bits, alpha composited on white.
        col = colour.astype(np.float32) / scale
        if alpha is not None:
            a = np.clip(alpha.astype(np.float32) / scale, 0.0, 1.0)
            col = col * a + (1.0 - a)
        out = np.clip(np.rint(col * 255.0), 0, 255).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def _decode_pillow(data: bytes) -> np.ndarray | None:
    """Fallback decoder for what cv2 cannot read (GIF, unusual TIFF/PNG modes); None on failure."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            if has_alpha:
                return _to_rgb8(np.asarray(im.convert("RGBA")), bgr=False)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im).astype(np.float32)
                # 32-bit 'I' holds 16-bit data for PNG/TIFF in practice
                return _to_rgb8((arr / 65535.0).astype(np.float32), bgr=False)
            return _to_rgb8(np.asarray(im.convert("RGB")), bgr=False)
    except Exception:  # Pillow raises many types for bad data; all mean "cannot decode"
        return None


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 HxWx3; raise ImageError(reason) if impossible.

    JPEGs are decoded in colour mode so that cv2 applies their EXIF orientation (phone photos);
    everything else is decoded unchanged (keeps alpha and 16-bit depth for the conversion).
    """
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    fmt = sniff_format(data)
    if fmt == "jpeg" and _jpeg_truncated(data):
        raise ImageError("truncated JPEG (no end-of-image marker after the image data)")
    if fmt == "png" and _png_truncated(data):
        raise ImageError("truncated PNG (file ends before the IEND chunk)")
    buf = np.frombuffer(data, np.uint8)
    img = None
    if fmt is not None:
        flags = cv2.IMREAD_COLOR if fmt == "jpeg" else cv2.IMREAD_UNCHANGED
        try:
            img = cv2.imdecode(buf, flags)
        except cv2.error:
            img = None
    if img is not None:
        return _to_rgb8(img, bgr=True)
    out = _decode_pillow(data)
    if out is not None:
        return out
    if fmt is None:
        raise _unknown_format_error(data)
    raise ImageError(f"corrupt {fmt.upper()} data (decoder failed)")


def _unknown_format_error(data: bytes) -> ImageError:
    head = data[:512]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    if printable == len(head):
        return ImageError("not an image: the file holds text")
    return ImageError("not an image: unrecognised file format")


# Defaults of the size checks made from the file header, before any decoding.
DEFAULT_MAX_PIXELS = 50_000_000  # a 48 MP phone photo passes; decoded it takes 150 MB as RGB
DEFAULT_MIN_SIDE = 32  # px; a smaller image cannot show a person (Market crops are 64 wide)


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header, without decoding its pixels.

    None when Pillow does not recognise the file (the decoder then gives the reason).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        return None
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # only the header is read here; the size is judged below
    try:
        with Image.open(path) as im:  # lazy: reads the header only
            return int(im.size[0]), int(im.size[1])
    except Exception:  # unknown, empty or damaged headers: left to the decoder to word
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = old


def check_image_size(
    path: str | Path,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = DEFAULT_MIN_SIDE,
) -> tuple[int, int] | None:
    """The header size (width, height), or ImageError if it is too large or too small.

    Runs before decoding, so a decompression bomb (a 30000x30000 PNG of a few KB) is refused
    without ever allocating its pixels. None when the header is not readable by Pillow.
    """
    size = header_size(path)
    if size is None:
        return None
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise ImageError(
            f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP > --max-pixels {max_pixels / 1e6:g} MP"
        )
    if min_side and min(w, h) < min_side:
        raise ImageError(f"image too small: {w}x{h}, shorter side < --min-image-px {min_side}")
    return size


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3).

    Grayscale is repeated to 3 channels, 16-bit is scaled to 8 bits, alpha is composited onto
    white, JPEG EXIF orientation is applied. Raises ImageError for empty, truncated, corrupt,
    non-image or unreadable files.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise ImageError("is a directory, not a file") from None
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise ImageError(f"unreadable file ({exc.strerror or exc.__class__.__name__})") from None
    return decode_image(data)


def save_image(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write RGB uint8 (H, W, 3) or grayscale (H, W) to `path` atomically (tmp file + os.replace).

    The format follows the extension; `quality` applies to JPEG and WebP.
    """
    p = Path(path)
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected uint8 (H, W, 3) or (H, W), got {arr.dtype} {arr.shape}")
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported image extension {p.suffix!r}; use one of {IMAGE_EXTENSIONS}")
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    bgr = arr[:, :, ::-1] if arr.ndim == 3 else arr
    ok, enc = cv2.imencode(ext, np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError(f"cv2 could not encode {p.name}")
    write_bytes(p, enc.tobytes())
