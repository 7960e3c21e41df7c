"""`pg2kit prepare`: raw dataset -> keypoints -> body masks (and pose maps) -> HDF5 shards.

Reads a dataset through its adapter, finds or imports keypoints, writes OUT/shards/*.h5 with done
markers, OUT/failures.csv and OUT/manifest.json (docs/schema.md). Safe to interrupt and re-run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pg2kit import __version__, shards
from pg2kit.atomic import write_text
from pg2kit.keypoints import NUM_KEYPOINTS, present

DATASETS = ("market1501", "deepfashion", "folder", "synthetic")
META_FIELDS = ("camera", "sequence", "frame", "junk", "distractor")
META_DTYPES = {"camera": np.int16, "sequence": np.int16, "frame": np.int32, "junk": bool}
META_DTYPES["distractor"] = bool
# Settings that change what a shard holds: a finished shard made with others is not reused.
SHARD_PARAMS = ("dataset", "keypoints", "map_kind", "map_radius", "map_sigma", "mask_radius")
SHARD_PARAMS += ("store_maps", "size", "crop176", "shard_size", "compression")


class PrepareError(RuntimeError):
    """A problem with the whole run (bad layout, mismatched settings, nothing usable)."""


@dataclass
class PrepareConfig:
    dataset: str
    out: Path
    src: Path | None = None
    keypoints: str = "mediapipe"  # 'mediapipe', a Def-GAN CSV file, or a folder of OpenPose JSON
    size: tuple[int, int] | None = None  # folder: output H x W; synthetic: image H x W
    crop176: bool = False  # deepfashion: store the 176-wide crop (x offset 40)
    map_kind: str = "disk"
    map_radius: int = 4
    map_sigma: float = 6.0
    mask_radius: int = 4
    store_maps: bool = False
    shard_size: int = 1024
    chunk_size: int = 32  # images per worker task
    workers: int = 2
    overwrite: bool = False
    compression: str = "auto"  # images uncompressed, masks/maps gzip level 1
    estimator_options: dict[str, Any] = field(default_factory=dict)
    test_identities: float = 0.0  # folder: share of identities held out as 'test'
    synthetic_ids: int = 40
    synthetic_poses: int = 8
    seed: int = 0

    def shard_params(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size) if self.size else None
        if self.keypoints not in ("mediapipe", "synthetic"):
            d["keypoints"] = str(Path(self.keypoints).resolve())
        return {k: d[k] for k in SHARD_PARAMS}


@dataclass
class Item:
    """One input sample on its way into a shard (picklable; goes to worker processes)."""

    name: str
    identity: str
    split: str
    source_path: str
    meta: dict[str, Any]
    path: Path | None = None  # raw file to load through the adapter
    image: np.ndarray | None = None  # or the image itself (synthetic)
    keypoints: np.ndarray | None = None  # imported keypoints; None -> run the estimator
    scores: np.ndarray | None = None
    synthetic: tuple[int, int] | None = None  # (identity, pose) of a figure to render


@dataclass
class ChunkResult:
    arrays: dict[str, Any]
    failures: list[tuple[str, str]]
    no_person: int


# ---------------------------------------------------------------- keypoint sources


class ImportedKeypoints:
    """Keypoints made elsewhere: a Def-GAN annotation CSV or a folder of OpenPose JSON files."""

    def __init__(self, spec: str):
        self.path = Path(spec)
        if not self.path.exists():
            raise PrepareError(f"--keypoints {spec}: no such file or folder")
        self.order: list[str] = []
        self._csv: dict[str, np.ndarray] = {}
        self._json: dict[str, Path] = {}
        if self.path.is_dir():
            self.kind = "openpose-json"
            for p in sorted(self.path.rglob("*.json")):
                self._json.setdefault(_match_key(p.stem.removesuffix("_keypoints")), p)
            if not self._json:
                raise PrepareError(f"--keypoints {spec}: folder holds no OpenPose .json files")
        else:
            from pg2kit.formats import FormatError, read_defgan_annotations

            self.kind = "defgan-csv"
            try:
                table = read_defgan_annotations(self.path)
            except FormatError as e:
                raise PrepareError(str(e)) from None
            for name, kp in zip(table.names, table.keypoints, strict=True):
                self._csv.setdefault(_match_key(name), kp)
                self.order.append(_match_key(name))

    def lookup(self, name: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Keypoints for an image, matched on its name's stem (or its raw file's stem)."""
        keys = [_match_key(name)] + ([_match_key(path.name)] if path is not None else [])
        if self.kind == "defgan-csv":
            kp = next((self._csv[k] for k in keys if k in self._csv), None)
            if kp is None:
                return None
            kp = kp.astype(np.float32)
            return kp, present(kp).astype(np.float32)
        p = next((self._json[k] for k in keys if k in self._json), None)
        if p is None:
            return None
        from pg2kit.formats import read_openpose_json

        return read_openpose_json(p)


def _match_key(name: str) -> str:
    """Names match on their stem (annotations say .jpg where files may be .png), with the
    'fashion' spelling of DeepFashion's 'fasion' files."""
    from pg2kit.datasets.deepfashion import canonical_key

    return canonical_key(Path(name).name)


# ---------------------------------------------------------------- worker side

_WORKER_ESTIMATOR: tuple[str, Any] | None = None


def _estimator(options: dict[str, Any]) -> Any:
    """One estimator per worker process, built on first use and kept for later tasks."""
    global _WORKER_ESTIMATOR
    key = json.dumps(options, sort_keys=True)
    if _WORKER_ESTIMATOR is None or _WORKER_ESTIMATOR[0] != key:
        from pg2kit.estimators import make_estimator

        _WORKER_ESTIMATOR = (key, make_estimator("mediapipe", **options))
    return _WORKER_ESTIMATOR[1]


def process_chunk(items: list[Item], adapter: Any, cfg: PrepareConfig) -> ChunkResult:
    """Load, find keypoints, crop to the stored frame and draw masks for a list of items."""
    import cv2

    from pg2kit import maps

    kept: list[Item] = []
    images, kps, scores = [], [], []
    failures: list[tuple[str, str]] = []
    no_person = 0
    frame = _frame(adapter, cfg)
    for it in items:
        if it.synthetic is not None:
            _render_synthetic(it, cfg)
        try:
            image = it.image if it.image is not None else adapter.load(_record(it))
            if it.keypoints is not None:
                kp, sc = it.keypoints, it.scores
            else:
                kp, sc = _estimator(cfg.estimator_options)(image)
            if adapter is not None:
                image, kp, sc = adapter.finalize(image, kp, sc)
        except (ValueError, OSError, cv2.error) as e:  # ImageError, NoPersonError, bad frames
            failures.append((it.source_path, _one_line(e)))
            continue
        if image.shape[:2] != frame[:2]:
            failures.append((it.source_path, f"image is {image.shape[1]}x{image.shape[0]} after "
                             f"loading, expected {frame[1]}x{frame[0]}"))  # fmt: skip
            continue
        if not present(kp).any():
            no_person += 1
        kept.append(it)
        images.append(image)
        kps.append(np.asarray(kp, np.float32))
        scores.append(np.asarray(sc, np.float32))
    h, w = frame[:2]
    n = len(kept)
    kp_arr = np.stack(kps) if n else np.zeros((0, NUM_KEYPOINTS, 2), np.float32)
    arrays: dict[str, Any] = {
        "image": np.stack(images) if n else np.zeros((0, h, w, 3), np.uint8),
        "keypoints": kp_arr,
        "scores": np.stack(scores) if n else np.zeros((0, NUM_KEYPOINTS), np.float32),
        "mask": maps.body_masks(kp_arr, h, w, radius=cfg.mask_radius),
    }
    if cfg.store_maps:
        pm = maps.pose_maps(kp_arr, h, w, kind=cfg.map_kind, radius=cfg.map_radius,
                            sigma=cfg.map_sigma)  # fmt: skip
        arrays["pose_map"] = pm.astype(np.uint8 if cfg.map_kind == "disk" else np.float16)
    arrays["name"] = [it.name for it in kept]
    arrays["identity"] = [it.identity for it in kept]
    arrays["source_path"] = [it.source_path for it in kept]
    for key in META_FIELDS:
        default = False if META_DTYPES[key] is bool else -1
        arrays[key] = np.array([it.meta.get(key, default) for it in kept], META_DTYPES[key])
    return ChunkResult(arrays, failures, no_person)


def _render_synthetic(it: Item, cfg: PrepareConfig) -> None:
    from pg2kit.datasets.synthetic import render_sample

    index, pose = it.synthetic
    sample, _ = render_sample(
        index, pose, size=cfg.size or (128, 64), seed=cfg.seed, split=it.split
    )
    it.name, it.source_path, it.meta = (
        sample.name,
        f"synthetic/{sample.name}",
        {"camera": sample.camera},
    )
    it.image, it.keypoints, it.scores = sample.image, sample.keypoints, sample.scores


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _record(it: Item) -> Any:
    from pg2kit.datasets.base import Record

    return Record(
        name=it.name, path=it.path, rel_path=it.source_path, split=it.split,
        identity=it.identity, **it.meta,
    )  # fmt: skip


def _frame(adapter: Any, cfg: PrepareConfig) -> tuple[int, int, int]:
    if adapter is None:  # synthetic
        h, w = cfg.size or (128, 64)
        return (h, w, 0)
    return tuple(adapter.frame)


# ---------------------------------------------------------------- parent side


def make_adapter(cfg: PrepareConfig) -> Any:
    if cfg.dataset == "synthetic":
        return None
    if cfg.dataset == "market1501":
        from pg2kit.datasets.market1501 import Market1501

        return Market1501()
    if cfg.dataset == "deepfashion":
        from pg2kit.datasets.deepfashion import DeepFashion

        return DeepFashion(crop176=cfg.crop176)
    if cfg.dataset == "folder":
        from pg2kit.datasets.folder import Folder

        size = cfg.size or (256, 256)
        return Folder(size=size, test_identities=cfg.test_identities)
    raise PrepareError(f"unknown dataset {cfg.dataset!r} (choose from {', '.join(DATASETS)})")


def _synthetic_items(cfg: PrepareConfig) -> dict[str, list[Item]]:
    """Placeholders for the synthetic figures; the workers render them (see process_chunk)."""
    from pg2kit.datasets.synthetic import split_of

    splits: dict[str, list[Item]] = {}
    for index in range(1, cfg.synthetic_ids + 1):
        split = split_of(index, cfg.synthetic_ids, 0.2)
        for pose in range(cfg.synthetic_poses):
            item = Item("", f"{index:04d}", split, "", {}, synthetic=(index, pose))
            splits.setdefault(split, []).append(item)
    return splits


def _record_items(
    cfg: PrepareConfig, adapter: Any, source: ImportedKeypoints | None
) -> tuple[dict[str, list[Item]], list[tuple[str, str]], list[str]]:
    from pg2kit.datasets.base import AdapterError

    try:
        scan = adapter.scan(Path(cfg.src))
    except AdapterError as e:
        raise PrepareError(str(e)) from None
    failures = list(scan.failures)
    notes = list(scan.notes)
    splits: dict[str, list[Item]] = {}
    missing = 0
    for split, records in scan.records.items():
        items = []
        for r in records:
            meta = {k: getattr(r, k) for k in META_FIELDS}
            it = Item(r.name, r.identity, r.split, r.rel_path, meta, path=r.path)
            if source is not None:
                found = source.lookup(r.name, r.path)
                if found is None:
                    failures.append((r.rel_path, f"no keypoints for {r.name} in {source.path}"))
                    missing += 1
                    continue
                it.keypoints, it.scores = found
            items.append(it)
        if source is not None and source.order:
            # keep the annotation file's row order, so an export reproduces it line for line
            rank = {n: i for i, n in enumerate(source.order)}
            items.sort(key=lambda it: rank.get(_match_key(it.name), len(rank)))
        splits[split] = items
    if missing:
        notes.append(f"{missing} images have no keypoints in {source.path}; skipped")
    return splits, failures, notes


def run_prepare(
    cfg: PrepareConfig,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare `cfg.out` from `cfg.src`; returns the manifest written."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    adapter = make_adapter(cfg)
    source = None
    if cfg.dataset == "synthetic":
        splits = _synthetic_items(cfg)
        scan_failures: list[tuple[str, str]] = []
        notes: list[str] = []
        kp_kind, kp_version = "synthetic", __version__
    else:
        if cfg.keypoints != "mediapipe":
            source = ImportedKeypoints(cfg.keypoints)
        splits, scan_failures, notes = _record_items(cfg, adapter, source)
        if source is not None:
            kp_kind, kp_version = source.kind, str(source.path.name)
        else:
            kp_kind, kp_version = "mediapipe", _estimator_version(cfg)
    for note in notes:
        log(f"note: {note}")
    frame = _frame(adapter, cfg)
    params = cfg.shard_params()
    attrs = {
        "schema_version": shards.SCHEMA_VERSION,
        "dataset": cfg.dataset,
        "keypoint_layout": "openpose-coco18",
        "keypoint_order": "xy",
        "map_kind": cfg.map_kind,
        "map_radius": cfg.map_radius,
        "map_sigma": cfg.map_sigma,
        "mask_radius": cfg.mask_radius,
        "estimator": kp_kind,
        "estimator_version": kp_version,
        "frame_height": frame[0],
        "frame_width": frame[1],
        "frame_x_offset": frame[2],
        "pg2kit_version": __version__,
    }
    if cfg.compression == "auto":  # chosen by bench/shard_io.py: images barely compress
        compression = {"image": "none", "mask": "gzip1", "pose_map": "gzip1"}
    else:
        compression = dict.fromkeys(("image", "mask", "pose_map"), cfg.compression)

    # plan: shards of consecutive items; finished shards (with matching settings) are skipped
    plan: list[tuple[str, int, list[Item]]] = []
    done: dict[tuple[str, int], dict[str, Any]] = {}
    for split, items in splits.items():
        for k in range(max(1, -(-len(items) // cfg.shard_size))):
            path = shards.shard_path(out, split, k)
            marker = shards.read_marker(path)
            if marker is not None and not cfg.overwrite:
                if marker.get("params") != params:
                    raise PrepareError(
                        f"{out} holds shards made with other settings ({path.name}); "
                        "use --overwrite to redo them or choose another -o"
                    )
                done[(split, k)] = marker
            else:
                shards.remove_shard(path)
                plan.append((split, k, items[k * cfg.shard_size : (k + 1) * cfg.shard_size]))
    _drop_stale(out, splits, cfg.shard_size)
    total = sum(len(items) for _, _, items in plan)
    if done:
        log(f"resuming: {len(done)} finished shard(s) kept, {len(plan)} to do")

    tasks = []  # (shard key, chunk index, items)
    for split, k, items in plan:
        chunks = [items[i : i + cfg.chunk_size] for i in range(0, len(items), cfg.chunk_size)]
        for c, chunk in enumerate(chunks or [[]]):
            tasks.append(((split, k), c, len(chunks or [[]]), chunk))

    pending: dict[tuple[str, int], dict[int, ChunkResult]] = {}
    failures_shown = 0
    bar = tqdm(total=total, unit="img", desc="prepare", disable=not progress or total == 0,
               dynamic_ncols=True)  # fmt: skip
    workers = cfg.workers if len(tasks) > 1 else 1
    if workers > 1:
        runner = Parallel(n_jobs=workers, backend="loky", return_as="generator")
        results: Iterator[ChunkResult] = runner(
            delayed(process_chunk)(chunk, adapter, cfg) for _, _, _, chunk in tasks
        )
    else:
        results = (process_chunk(chunk, adapter, cfg) for _, _, _, chunk in tasks)
    for (key, c, nchunks, chunk), res in zip(tasks, results, strict=True):
        bar.update(len(chunk))
        for path, reason in res.failures:
            if failures_shown < 20:
                bar.write(f"skipped {path}: {reason}")
            failures_shown += 1
        got = pending.setdefault(key, {})
        got[c] = res
        if len(got) == nchunks:
            parts = [got[i] for i in range(nchunks)]
            arrays = _concat([p.arrays for p in parts])
            marker = {
                "params": params,
                "failures": [list(f) for p in parts for f in p.failures],
                "no_person": sum(p.no_person for p in parts),
            }
            split, k = key
            path = shards.shard_path(out, split, k)
            done[key] = shards.write_shard(path, arrays, {**attrs, "split": split},
                                           compression, marker)  # fmt: skip
            done[key].update(marker)
            del pending[key]
    bar.close()
    if failures_shown > 20:
        log(f"... and {failures_shown - 20} more skipped files: see {out / shards.FAILURES}")
    if plan and (out / shards.PAIRS).exists():
        (out / shards.PAIRS).unlink()
        log("note: shards changed, removed the old pairs.h5 (run `pg2kit pairs` again)")

    manifest = _manifest(cfg, out, splits, done, scan_failures, attrs, frame, adapter, params)
    old = out / shards.MANIFEST
    if (out / shards.PAIRS).exists() and old.exists():  # shards unchanged: the pairs still hold
        manifest["pairs"] = json.loads(old.read_text(encoding="utf-8")).get("pairs")
    _write_failures(out, scan_failures, done)
    shards.write_manifest(out, manifest)
    manifest["elapsed_s"] = round(time.perf_counter() - t0, 2)
    if sum(s["count"] for s in manifest["splits"].values()) == 0:
        raise PrepareError(f"nothing usable came out of {cfg.src}: see {out / shards.FAILURES}")
    return manifest


def _estimator_version(cfg: PrepareConfig) -> str:
    # building the estimator only reads its settings: MediaPipe is not loaded in this process
    from pg2kit.estimators import make_estimator

    return make_estimator("mediapipe", **cfg.estimator_options).version


def _drop_stale(out: Path, splits: dict[str, list[Item]], shard_size: int) -> None:
    """Remove shards beyond what the current inputs need (e.g. after fewer inputs)."""
    for p in sorted((out / shards.SHARD_DIR).glob("*.h5*")):
        stem = p.name.split(".h5")[0]
        split, _, idx = stem.rpartition("-")
        if not idx.isdigit():
            continue
        n = len(splits.get(split, []))
        if int(idx) >= max(1, -(-n // shard_size)) or split not in splits:
            p.unlink(missing_ok=True)


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for key in parts[0]:
        vals = [p[key] for p in parts]
        out[key] = sum(vals, []) if isinstance(vals[0], list) else np.concatenate(vals)
    return out


def _manifest(cfg, out, splits, done, scan_failures, attrs, frame, adapter, params):
    split_info = {}
    for split in splits:
        entries = sorted((k, v) for (s, k), v in done.items() if s == split)
        shard_list = [
            {key: v[key] for key in ("file", "count", "bytes", "sha256")} for _, v in entries
        ]
        split_info[split] = {
            "count": sum(s["count"] for s in shard_list),
            "inputs": len(splits[split]),
            "no_person": sum(v.get("no_person", 0) for _, v in entries),
            "skipped": sum(len(v.get("failures", [])) for _, v in entries),
            "shards": shard_list,
        }
    prefix = getattr(adapter, "csv_prefix", None) or cfg.dataset
    return {
        "schema_version": shards.SCHEMA_VERSION,
        "pg2kit_version": __version__,
        "dataset": cfg.dataset,
        "csv_prefix": prefix,
        "source": str(Path(cfg.src).resolve()) if cfg.src else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "frame": {"height": frame[0], "width": frame[1], "x_offset": frame[2]},
        "keypoints": {"source": attrs["estimator"], "version": attrs["estimator_version"]},
        "params": params,
        "splits": split_info,
        "failures": len(scan_failures) + sum(len(v.get("failures", [])) for v in done.values()),
    }


def _write_failures(out: Path, scan_failures, done) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["split", "path", "reason"])
    for path, reason in scan_failures:
        w.writerow(["", path, reason])
    for (split, _), v in sorted(done.items()):
        for path, reason in v.get("failures", []):
            w.writerow([split, path, reason])
    write_text(out / shards.FAILURES, buf.getvalue())


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
