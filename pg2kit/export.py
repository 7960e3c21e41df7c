"""Export a prepared folder to the layouts other pose-transfer code reads (docs/formats.md).

Formats (`FORMATS`):

- ``defgan``: Def-GAN/PATN annotation and pairs CSVs in the stored frame (+ images).
- ``patn-resize``: PATN's DeepFashion "resize" CSVs in the 176-wide frame (x - 40) (+ images).
- ``openpose-json``: one ``<stem>_keypoints.json`` per image, COCO-18 ``pose_keypoints_2d``.
- ``pidm``: PIDM/NTED: one LMDB per resolution, ``pose/**.txt``, ``<split>_pairs.txt``.
- ``pcdms``: PCDMs: ``train_all_png/``, ``normalized_pose_txt/``, ``openpose_all_img/`` and
  ``<split>_data.json``.
- ``controlnet``: Hugging Face ``imagefolder`` with conditioning skeletons and metadata.jsonl.

Safety: every name read from the prepared folder passes `shards.check_name` (plus the rules of
the target's loader, e.g. no ``,`` in PIDM pair files) before a path is built from it, and every
path written is resolved and checked to lie inside the output folder. Every file is written to a
temporary name and renamed (never half-written); index files (CSV, JSON, pair lists) come last,
so a folder whose index exists is complete. Re-running the same export into the same folder
resumes: per-image files already there are kept (`.pg2kit-export.json` records what was asked).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pg2kit import shards
from pg2kit.atomic import atomic_path, write_error, write_text
from pg2kit.keypoints import NUM_KEYPOINTS, present

FORMATS = ("defgan", "patn-resize", "openpose-json", "pidm", "pcdms", "controlnet")
STATE_FILE = ".pg2kit-export.json"

# DeepFashion's 256 x 256 frame holds the person in the 176 columns starting at x = 40 (SPEC 2);
# PATN's "resize" files and PIDM/NTED's pose files are in that frame.
DF_HEIGHT, DF_WIDTH, DF_X0, DF_CROP = 256, 256, 40, 176

_BATCH = 256  # images read per shard access


class ExportError(ValueError):
    """The prepared folder cannot be exported in the asked format (one-line message)."""


# ---------------------------------------------------------------- names and paths


def _check_name(name: str, where: str) -> str:
    """A plain file name (shards.check_name), as an ExportError naming `where`."""
    try:
        return shards.check_name(name, where)
    except shards.PreparedError as e:
        raise ExportError(str(e)) from None


def _forbid(name: str, where: str, bad: Sequence[str], why: str) -> None:
    for b in bad:
        if b in name:
            raise ExportError(f"{where}: {name!r} holds {b!r}, which {why}")


class OutFolder:
    """The export's output folder: every path is checked to stay inside it; per-sample files are
    written atomically (no fsync: thousands of files), index files with fsync."""

    def __init__(self, root: Path, resume: bool = False):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(self.root, e) from None
        self.real = self.root.resolve()
        self.resume = resume
        self.skipped = 0

    def path(self, *parts: str) -> Path:
        """ROOT/parts..., refused (ExportError) if it resolves outside ROOT."""
        p = self.root.joinpath(*parts)
        real = p.resolve()
        if real == self.real or not real.is_relative_to(self.real):
            raise ExportError(f"{p}: would be written outside the output folder {self.root}")
        return p

    def exists(self, path: Path) -> bool:
        if self.resume and path.exists():
            self.skipped += 1
            return True
        return False

    def put(self, path: Path, data: bytes) -> None:
        with atomic_path(path, needed=len(data)) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)

    def put_index(self, path: Path, text: str) -> Path:
        return write_text(path, text)


# ---------------------------------------------------------------- the prepared folder


@dataclass
class Frame:
    """The stored image frame (height, width) and its x offset in DeepFashion's 256-wide frame."""

    height: int
    width: int
    x_offset: int = 0

    @property
    def deepfashion(self) -> bool:
        """True if the stored frame is 256 high and covers DeepFashion's 176 person columns."""
        return (
            self.height == DF_HEIGHT
            and self.x_offset <= DF_X0
            and self.x_offset + self.width >= DF_X0 + DF_CROP
        )

    def crop_columns(self) -> tuple[int, int]:
        """Stored columns [a, b) of DeepFashion's 176-wide person crop."""
        a = DF_X0 - self.x_offset
        return a, a + DF_CROP


@dataclass
class Split:
    name: str
    names: list[str]
    keypoints: np.ndarray  # (N, 18, 2) float32 (x, y) stored frame, -1 missing
    scores: np.ndarray  # (N, 18)
    identity: list[str]
    pairs: np.ndarray | None  # (P, 2) int64 (source, target) or None
    stems: list[str] = field(default_factory=list)


class Prepared:
    """What an export reads from a prepared folder, through pg2kit.shards only."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest = shards.load_manifest(self.root)
        frame = self.manifest.get("frame") or {}
        if not frame.get("height") or not frame.get("width"):
            attrs = shards.shard_attrs(self.root)
            frame = {
                "height": attrs.get("frame_height"),
                "width": attrs.get("frame_width"),
                "x_offset": attrs.get("frame_x_offset", 0),
            }
        self.frame = Frame(
            int(frame["height"]), int(frame["width"]), int(frame.get("x_offset") or 0)
        )
        self.dataset = str(self.manifest.get("dataset") or "dataset")
        self.prefix = str(self.manifest.get("csv_prefix") or self.dataset)
        _check_name(self.prefix, f"{self.root / shards.MANIFEST}: csv_prefix")
        self.split_names = list(self.manifest["splits"])
        for s in self.split_names:
            _check_name(s, f"{self.root / shards.MANIFEST}: split")
        self._splits: dict[str, Split] = {}

    def fingerprint(self) -> str:
        desc = {
            "splits": {
                s: [e.get("sha256", "") for e in info.get("shards", [])]
                for s, info in self.manifest["splits"].items()
            },
            "pairs": self.manifest.get("pairs"),
        }
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()

    def split(self, name: str, need_identity: bool = False) -> Split:
        if name in self._splits:
            return self._splits[name]
        fields = ["name", "keypoints", "scores"] + (["identity"] if need_identity else [])
        got = shards.read_split_fields(self.root, name, fields)
        where = f"{self.root}: split {name!r}"
        names = [str(n) for n in got["name"]]
        for i, n in enumerate(names):
            _check_name(n, f"{where}, sample {i} name")
        kp = np.asarray(got["keypoints"], np.float32).reshape(-1, NUM_KEYPOINTS, 2)
        sc = np.asarray(got["scores"], np.float32).reshape(-1, NUM_KEYPOINTS)
        ids = [str(v) for v in got["identity"]] if need_identity else [""] * len(names)
        if need_identity:
            for i, v in enumerate(ids):
                _check_name(v, f"{where}, sample {i} identity")
        out = Split(name, names, kp, sc, ids, self.pairs(name, len(names)))
        out.stems = [PurePosixPath(n).stem or n for n in names]
        self._splits[name] = out
        return out

    def pairs(self, split: str, count: int) -> np.ndarray | None:
        """(P, 2) pairs of `split` with every id checked in 0..count-1, or None without pairs."""
        if not (self.root / shards.PAIRS).exists():
            return None
        try:
            arr = shards.read_pairs(self.root, split)
        except KeyError:  # PairsMissingError: no pairs for this split
            return None
        arr = np.asarray(arr, np.int64).reshape(-1, 2)
        if arr.size and (arr.min() < 0 or arr.max() >= count):
            bad = int(np.flatnonzero(((arr < 0) | (arr >= count)).any(axis=1))[0])
            raise ExportError(
                f"{self.root / shards.PAIRS}: split {split!r}, pair row {bad}: ids "
                f"{arr[bad].tolist()} outside 0..{count - 1}; re-run `pg2kit pairs`"
            )
        return arr

    def images(
        self, split: str, ids: Sequence[int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(sample id, RGB image) of `split` in id order, read in batches."""
        reader = shards.SplitReader(self.root, split)
        try:
            ids = np.arange(len(reader)) if ids is None else np.asarray(ids, np.int64)
            for lo in range(0, len(ids), _BATCH):
                chunk = ids[lo : lo + _BATCH]
                for i, img in zip(chunk, reader.read("image", chunk), strict=True):
                    yield int(i), img
        finally:
            reader.close()


# ---------------------------------------------------------------- helpers


def _encode(image: np.ndarray, ext: str, quality: int = 95) -> bytes:
    import cv2

    ext = ext.lower()
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    elif ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    arr = np.ascontiguousarray(image[:, :, ::-1] if image.ndim == 3 else image)
    ok, data = cv2.imencode(ext, arr, params)
    if not ok:
        raise ExportError(f"cannot encode an image as {ext}")
    return data.tobytes()


def _image_ext(name: str, where: str) -> str:
    from pg2kit.imageio import IMAGE_EXTENSIONS

    ext = PurePosixPath(name).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ExportError(
            f"{where}: {name!r} has no image extension ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return ext


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)


def _scale_keypoints(kp: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """(18, 2) keypoints from a (h, w) frame to a resized (H, W) one (pixel centres kept)."""
    if src == dst:
        return kp
    out = kp.astype(np.float64).copy()
    ok = present(kp)
    out[ok, 0] = (kp[ok, 0] + 0.5) * dst[1] / src[1] - 0.5
    out[ok, 1] = (kp[ok, 1] + 0.5) * dst[0] / src[0] - 0.5
    return out


def _skeleton(kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenPose-colour skeleton of `kp` on black, (H, W, 3)."""
    from pg2kit.viz import draw_skeleton

    return draw_skeleton(np.zeros((*size, 3), np.uint8), kp)


def _num(v: float) -> str:
    """A coordinate as short text: integers without decimals, else 3 decimals."""
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=not enabled or total == 0,
                dynamic_ncols=True)  # fmt: skip


def _pairs_needed(src: Prepared, fmt: str) -> None:
    if not (src.root / shards.PAIRS).exists():
        raise ExportError(
            f"{src.root}: no {shards.PAIRS}; the {fmt} format needs pairs: "
            f"run `pg2kit pairs {src.root}` first"
        )


# ---------------------------------------------------------------- defgan and patn-resize


def _write_named_images(
    src: Prepared, out: OutFolder, split: Split, folder: str, crop: tuple[int, int] | None,
    progress: bool,
) -> int:  # fmt: skip
    exts = [_image_ext(n, f"{src.root}: split {split.name!r}") for n in split.names]
    n = 0
    with _progress(len(split.names), f"images {split.name}", progress) as bar:
        for i, img in src.images(split.name):
            path = out.path(folder, split.names[i])
            if not out.exists(path):
                if crop is not None:
                    img = img[:, crop[0] : crop[1]]
                out.put(path, _encode(img, exts[i]))
                n += 1
            bar.update(1)
    return n


def export_defgan(
    root: Path,
    out_dir: Path,
    images: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
    *,
    resize: bool = False,
) -> list[Path]:
    """Write `<prefix>-annotation-<split>.csv` (and `-pairs-` where pairs exist) for each split.

    Keypoints are integer pixels of the stored frame (rounded); names keep their original
    extension. With `images`, every image goes to `out_dir/<split>/<name>`.

    resize=True writes PATN's DeepFashion "resize" files instead: `fasion-resize-annotation-
    <split>.csv` / `fasion-resize-pairs-<split>.csv` in the 176-wide frame (x - 40 of the
    256-wide frame) and, with `images`, the 176 x 256 crops.
    """
    from pg2kit.formats import write_defgan_annotations, write_pairs_csv

    src = Prepared(root)
    fmt = "patn-resize" if resize else "defgan"
    out, _ = _open_out(src, Path(out_dir), fmt, {"images": images})
    crop = None
    prefix = src.prefix
    if resize:
        if not src.frame.deepfashion:
            f = src.frame
            raise ExportError(
                f"{src.root}: frame {f.height}x{f.width} (x offset {f.x_offset}) is not "
                "DeepFashion's 256-high frame holding columns 40..215; patn-resize needs "
                "`pg2kit prepare deepfashion` output (256x256, or 256x176 with --crop176)"
            )
        crop = src.frame.crop_columns()
        prefix = "fasion-resize"
    written = []
    for name in src.split_names:
        split = src.split(name)
        kp = split.keypoints
        outside = 0
        if crop is not None:
            kp = kp.copy()
            ok = present(kp)
            kp[..., 0] = np.where(ok, kp[..., 0] - crop[0], kp[..., 0])
            off = ok & ((kp[..., 0] < -0.5) | (kp[..., 0] >= DF_CROP - 0.5))
            # within half a pixel of the left edge: pixel 0 (the CSV holds whole pixels)
            kp[..., 0] = np.where(ok & ~off & (kp[..., 0] < 0), 0, kp[..., 0])
            outside = int(off.sum())
            kp[off] = -1
        path = out.path(f"{prefix}-annotation-{name}.csv")
        write_defgan_annotations(path, split.names, kp)
        written.append(path)
        note = f" ({outside} keypoints outside the 176-wide crop made missing)" if outside else ""
        log(f"{path}: {len(split.names)} rows{note}")
        if split.pairs is not None:
            path = out.path(f"{prefix}-pairs-{name}.csv")
            write_pairs_csv(path, [(split.names[a], split.names[b]) for a, b in split.pairs])
            written.append(path)
            log(f"{path}: {len(split.pairs)} pairs")
        if images:
            _write_named_images(src, out, split, name, crop, progress)
            log(f"{out.path(name)}: {len(split.names)} images")
    _close_out(out, src, fmt, {"images": images})
    return written


# ---------------------------------------------------------------- openpose-json


def openpose_document(kp: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """An OpenPose per-image JSON document holding one COCO-18 person (no person if none is
    present). Missing keypoints are (0, 0, 0) as OpenPose writes them; a present keypoint with
    score 0 gets confidence 0.001 so that it stays present for readers that drop c == 0."""
    ok = present(kp)
    if not ok.any():
        return {"version": 1.3, "people": []}
    flat = []
    for j in range(NUM_KEYPOINTS):
        if ok[j]:
            c = float(scores[j]) if np.isfinite(scores[j]) and scores[j] > 0 else 0.001
            flat += [float(kp[j, 0]), float(kp[j, 1]), min(c, 1.0)]
        else:
            flat += [0.0, 0.0, 0.0]
    person = {
        "person_id": [-1],
        "pose_keypoints_2d": flat,
        "face_keypoints_2d": [],
        "hand_left_keypoints_2d": [],
        "hand_right_keypoints_2d": [],
        "pose_keypoints_3d": [],
        "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": [],
    }
    return {"version": 1.3, "people": [person]}


def export_openpose_json(
    root: Path, out_dir: Path, images: bool = False, log=print, progress: bool = True
) -> list[Path]:
    """`keypoints/<split>/<stem>_keypoints.json` per sample (stored-frame pixels, COCO-18 x, y,
    c); with `images`, `images/<split>/<name>`. `prepare <dataset> --keypoints OUT/keypoints`
    reads them back."""
    src = Prepared(root)
    opts = {"images": images}
    out, _ = _open_out(src, Path(out_dir), "openpose-json", opts)
    written = []
    for name in src.split_names:
        split = src.split(name)
        seen: dict[str, str] = {}
        for n, stem in zip(split.names, split.stems, strict=True):
            if stem in seen:
                raise ExportError(
                    f"{src.root}: split {name!r}: {seen[stem]!r} and {n!r} share the stem "
                    f"{stem!r}, so their <stem>_keypoints.json files would collide"
                )
            seen[stem] = n
        with _progress(len(split.names), f"json {name}", progress) as bar:
            for i, stem in enumerate(split.stems):
                path = out.path("keypoints", name, f"{stem}_keypoints.json")
                if not out.exists(path):
                    doc = openpose_document(split.keypoints[i], split.scores[i])
                    out.put(path, json.dumps(doc, separators=(",", ":")).encode())
                bar.update(1)
        written.append(out.path("keypoints", name))
        log(f"{out.path('keypoints', name)}: {len(split.names)} keypoint files")
        if images:
            _write_named_images(src, out, split, f"images/{name}", None, progress)
            log(f"{out.path('images', name)}: {len(split.names)} images")
    _close_out(out, src, "openpose-json", opts)
    return written


# ---------------------------------------------------------------- pidm / nted


def _pidm_component(value: str, where: str) -> str:
    """A path component PIDM/NTED's loader handles: it splits pair lines on ',', rewrites
    '.jpg' -> '.png', 'img/' -> 'pose/' and '.png' -> '.txt' anywhere in the path."""
    _forbid(value, where, (",", ".jpg", ".png", ".txt"), "PIDM/NTED's loader rewrites")
    if value.endswith("img"):
        raise ExportError(f"{where}: {value!r} ends in 'img', which PIDM/NTED's loader rewrites")
    if value != value.strip():
        raise ExportError(f"{where}: {value!r} starts or ends with blanks")
    return value


def pidm_pose_rows(kp: np.ndarray, frame: Frame) -> np.ndarray:
    """(18, 2) keypoints in PIDM/NTED's 256-wide pose frame; -1 where missing.

    The loader maps a pose-file x to image column (x - 40) * W / 176 and y to row y * H / 256
    of an H x W LMDB image. For DeepFashion frames the LMDB image is the 176-wide person crop and
    x is the 256-frame column (x + x_offset); for other frames the LMDB image is the whole stored
    image and x = 40 + x_stored * 176 / W_stored, y = y_stored * 256 / H_stored (plain scaling,
    as the loader scales).
    """
    kp = np.asarray(kp, np.float64)
    ok = present(kp)
    out = np.full((NUM_KEYPOINTS, 2), -1.0)
    if frame.deepfashion:
        x = kp[:, 0] + frame.x_offset
        y = kp[:, 1]
        ok &= (x >= DF_X0 - 0.5) & (x < DF_X0 + DF_CROP - 0.5)
    else:
        x = DF_X0 + kp[:, 0] * DF_CROP / frame.width
        y = kp[:, 1] * DF_HEIGHT / frame.height
    out[ok, 0], out[ok, 1] = x[ok], y[ok]
    return out


def export_pidm(
    root: Path,
    out_dir: Path,
    sizes: Sequence[tuple[int, int]] = ((256, 256),),
    log=print,
    progress: bool = True,
) -> list[Path]:
    """PIDM/NTED layout (docs/formats.md): `<H>-<W>/` LMDBs, `pose/`, `<split>_pairs.txt`."""
    try:
        import lmdb
    except ImportError:
        raise ExportError(
            'the pidm format writes LMDB databases: pip install "pg2kit[lmdb]"'
        ) from None
    src = Prepared(root)
    _pairs_needed(src, "pidm")
    sizes = [(int(h), int(w)) for h, w in sizes]
    opts = {"sizes": sizes}
    out, _ = _open_out(src, Path(out_dir), "pidm", opts)
    dataset = _pidm_component(src.dataset, f"{src.root}: dataset name")
    crop = src.frame.crop_columns() if src.frame.deepfashion else None

    splits = [src.split(s, need_identity=True) for s in src.split_names]
    keys: dict[str, list[str]] = {}
    seen: set[str] = set()
    for sp in splits:
        _pidm_component(sp.name, f"{src.root}: split name")
        ks = []
        for i, (stem, ident) in enumerate(zip(sp.stems, sp.identity, strict=True)):
            where = f"{src.root}: split {sp.name!r}, sample {i}"
            _pidm_component(stem, where + " name")
            _pidm_component(ident, where + " identity")
            key = f"img/{dataset}/{sp.name}/{ident}/{stem}.png"
            if key in seen:
                raise ExportError(f"{where}: two samples map to the same PIDM key {key!r}")
            seen.add(key)
            ks.append(key)
        keys[sp.name] = ks

    total = sum(len(sp.names) for sp in splits)
    envs = []
    for h, w in sizes:
        path = out.path(f"{h}-{w}")
        path.mkdir(parents=True, exist_ok=True)
        # map_size is an address-space reservation; the file grows only as data is written
        envs.append(lmdb.open(str(path), map_size=1 << 40, readahead=False, meminit=False))
    try:
        with _progress(total, "pidm", progress) as bar:
            for sp, ks in zip(splits, keys.values(), strict=True):
                _pidm_split(src, out, sp, ks, envs, sizes, crop, bar)
        for env in envs:
            with env.begin(write=True) as txn:
                txn.put(b"length", str(total).zfill(5).encode())
            env.sync()
    finally:
        for env in envs:
            env.close()
    written = [out.path(f"{h}-{w}") for h, w in sizes]
    for sp, ks in zip(splits, keys.values(), strict=True):
        if sp.pairs is None or not len(sp.pairs):
            continue
        # one line per pair: target first, then its source (the loader reads item[0] as the
        # target and item[1:] as sources)
        lines = [f"{ks[b]},{ks[a]}\n" for a, b in sp.pairs]
        path = out.path(f"{sp.name}_pairs.txt")
        out.put_index(path, "".join(lines))
        written.append(path)
        log(f"{path}: {len(lines)} pairs")
    log(f"{out.root}: {total} images in {', '.join(f'{h}-{w}' for h, w in sizes)} LMDB(s), pose/")
    _close_out(out, src, "pidm", opts)
    return written


def _pidm_split(src, out, sp, ks, envs, sizes, crop, bar) -> None:
    pending = []

    def flush():
        for env in envs:
            with env.begin(write=True) as txn:
                for k, blobs in pending:
                    txn.put(k.encode("utf-8"), blobs[envs.index(env)])
        pending.clear()

    for i, img in src.images(sp.name):
        key = ks[i]
        pose = out.path("pose", *key.removeprefix("img/").removesuffix(".png").split("/"))
        pose = pose.with_name(pose.name + ".txt")
        if not out.exists(pose):
            rows = pidm_pose_rows(sp.keypoints[i], src.frame)
            text = "".join(f"{_num(x)} {_num(y)}\n" for x, y in rows)
            out.put(pose, text.encode())
        person = img[:, crop[0] : crop[1]] if crop is not None else img
        pending.append((key, [_encode(_resize(person, s), ".png") for s in sizes]))
        if len(pending) >= _BATCH:
            flush()
        bar.update(1)
    flush()


# ---------------------------------------------------------------- pcdms


def _pcdms_stem(stem: str, where: str) -> str:
    _forbid(stem, where, (".jpg", ".png", ".txt"), "PCDMs's loader rewrites")
    return stem


def pcdms_pose_rows(kp: np.ndarray, frame: Frame) -> np.ndarray:
    """(18, 2) keypoints as fractions of the image width and height in [0, 1); -1 missing."""
    kp = np.asarray(kp, np.float64)
    out = np.full((NUM_KEYPOINTS, 2), -1.0)
    ok = present(kp)
    out[ok, 0] = (kp[ok, 0] + 0.5) / frame.width
    out[ok, 1] = (kp[ok, 1] + 0.5) / frame.height
    return out


def export_pcdms(root: Path, out_dir: Path, log=print, progress: bool = True) -> list[Path]:
    """PCDMs layout (docs/formats.md): images, pose text, skeleton JPEGs, <split>_data.json."""
    src = Prepared(root)
    _pairs_needed(src, "pcdms")
    out, _ = _open_out(src, Path(out_dir), "pcdms", {})
    splits = [src.split(s) for s in src.split_names]
    owner: dict[str, str] = {}
    for sp in splits:
        for i, stem in enumerate(sp.stems):
            where = f"{src.root}: split {sp.name!r}, sample {i} name"
            _pcdms_stem(stem, where)
            if stem in owner:
                raise ExportError(
                    f"{where}: stem {stem!r} also names a sample of split {owner[stem]!r}; "
                    "PCDMs keeps every image in one folder"
                )
            owner[stem] = sp.name
    total = sum(len(sp.names) for sp in splits)
    size = (src.frame.height, src.frame.width)
    with _progress(total, "pcdms", progress) as bar:
        for sp in splits:
            for i, img in src.images(sp.name):
                stem = sp.stems[i]
                path = out.path("train_all_png", f"{stem}.png")
                if not out.exists(path):
                    out.put(path, _encode(img, ".png"))
                path = out.path("normalized_pose_txt", f"{stem}.txt")
                if not out.exists(path):
                    rows = pcdms_pose_rows(sp.keypoints[i], src.frame)
                    out.put(path, "".join(f"{x:.6f} {y:.6f}\n" for x, y in rows).encode())
                path = out.path("openpose_all_img", f"{stem}_pose.jpg")
                if not out.exists(path):
                    out.put(path, _encode(_skeleton(sp.keypoints[i], size), ".jpg"))
                bar.update(1)
    written = []
    for sp in splits:
        if sp.pairs is None:
            continue
        items = [
            {"source_image": f"{sp.stems[a]}.jpg", "target_image": f"{sp.stems[b]}.jpg"}
            for a, b in sp.pairs
        ]
        path = out.path(f"{sp.name}_data.json")
        out.put_index(path, json.dumps(items, indent=1) + "\n")
        written.append(path)
        log(f"{path}: {len(items)} pairs")
    log(f"{out.root}: {total} images, pose text files and skeleton images")
    _close_out(out, src, "pcdms", {})
    return written


# ---------------------------------------------------------------- controlnet


def export_controlnet(
    root: Path,
    out_dir: Path,
    caption: str = "a photo of a person",
    size: tuple[int, int] | None = None,
    log=print,
    progress: bool = True,
) -> list[Path]:
    """Hugging Face imagefolder: `<split>/images/<stem>.png`, `<split>/conditioning_images/
    <stem>.png` (OpenPose-colour skeleton on black) and `<split>/metadata.jsonl`.

    caption: the `text` of every row; `{identity}`, `{split}` and `{name}` are filled in.
    size: (H, W) of the written images (default the stored frame).
    """
    src = Prepared(root)
    frame = (src.frame.height, src.frame.width)
    size = tuple(size) if size else frame
    opts = {"caption": caption, "size": list(size)}
    out, _ = _open_out(src, Path(out_dir), "controlnet", opts)
    try:
        caption.format(identity="", split="", name="")
    except (KeyError, IndexError, ValueError) as e:
        raise ExportError(
            f"--caption {caption!r}: only {{identity}}, {{split}} and {{name}} may be filled in ({e})"
        ) from None
    written = []
    for name in src.split_names:
        sp = src.split(name, need_identity=True)
        seen: set[str] = set()
        for i, stem in enumerate(sp.stems):
            if stem in seen:
                raise ExportError(f"{src.root}: split {name!r}, sample {i}: stem {stem!r} repeats")
            seen.add(stem)
        rows = []
        with _progress(len(sp.names), f"controlnet {name}", progress) as bar:
            for i, img in src.images(name):
                stem = sp.stems[i]
                image_rel = f"images/{stem}.png"
                cond_rel = f"conditioning_images/{stem}.png"
                path = out.path(name, "images", f"{stem}.png")
                if not out.exists(path):
                    out.put(path, _encode(_resize(img, size), ".png"))
                path = out.path(name, "conditioning_images", f"{stem}.png")
                if not out.exists(path):
                    kp = _scale_keypoints(sp.keypoints[i], frame, size)
                    out.put(path, _encode(_skeleton(kp, size), ".png"))
                text = caption.format(identity=sp.identity[i], split=name, name=sp.names[i])
                rows.append({"file_name": image_rel, "conditioning_image": cond_rel, "text": text})
                bar.update(1)
        path = out.path(name, "metadata.jsonl")
        out.put_index(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        written.append(path)
        log(f"{path}: {len(rows)} rows")
    _close_out(out, src, "controlnet", opts)
    return written


# ---------------------------------------------------------------- dispatch and state


def _open_out(src: Prepared, out_dir: Path, fmt: str, opts: dict) -> tuple[OutFolder, dict]:
    state = {"format": fmt, "source": src.fingerprint(), "options": opts}
    path = out_dir / STATE_FILE
    resume = False
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            resume = {k: old.get(k) for k in state} == json.loads(json.dumps(state))
        except (OSError, ValueError):
            resume = False
    out = OutFolder(out_dir, resume=resume)
    out.put_index(out.path(STATE_FILE), json.dumps({**state, "complete": False}, indent=1))
    return out, state


def _close_out(out: OutFolder, src: Prepared, fmt: str, opts: dict) -> None:
    state = {"format": fmt, "source": src.fingerprint(), "options": opts, "complete": True}
    out.put_index(out.path(STATE_FILE), json.dumps(state, indent=1))


def export(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    fmt: str = "defgan",
    *,
    images: bool = False,
    sizes: Sequence[tuple[int, int]] | None = None,
    caption: str = "a photo of a person",
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> list[Path]:
    """Export PREPARED folder `root` to `out_dir` in format `fmt` (one of FORMATS).

    images: also write images (defgan, patn-resize, openpose-json; the others always do).
    sizes: (H, W) resolutions: one LMDB each for pidm (default 256x256); the first is the image
        size for controlnet (default the stored frame). Other formats refuse it.
    """
    root, out_dir = Path(root), Path(out_dir)
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if sizes and fmt not in ("pidm", "controlnet"):
        raise ExportError(f"--size applies to pidm and controlnet, not {fmt}")
    if images and fmt in ("pidm", "pcdms", "controlnet"):
        log(f"note: the {fmt} format always writes images; --images changes nothing")
    for h, w in sizes or ():
        if not (8 <= h <= 8192 and 8 <= w <= 8192):
            raise ExportError(f"--size {h}x{w}: height and width must be within 8..8192")
    if fmt == "defgan":
        return export_defgan(root, out_dir, images=images, log=log, progress=progress)
    if fmt == "patn-resize":
        return export_defgan(root, out_dir, images=images, log=log, progress=progress, resize=True)
    if fmt == "openpose-json":
        return export_openpose_json(root, out_dir, images=images, log=log, progress=progress)
    if fmt == "pidm":
        return export_pidm(root, out_dir, sizes=sizes or ((256, 256),), log=log, progress=progress)
    if fmt == "pcdms":
        return export_pcdms(root, out_dir, log=log, progress=progress)
    size = sizes[0] if sizes else None
    if sizes and len(sizes) > 1:
        raise ExportError("controlnet takes one --size")
    return export_controlnet(root, out_dir, caption=caption, size=size, log=log, progress=progress)
