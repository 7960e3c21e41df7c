"""Agreement of the default keypoint estimator (and of one plain MediaPipe call) with reference
OpenPose COCO-18 rows: reads DATA/{Market1501,DeepFashion}/*.png and DATA/annotations.csv.
Usage: python bench/keypoint_agreement.py [--data /work/shared/data/realdev] [--folds 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pg2kit.estimators import (
    MediaPipeConfig,
    blazepose_to_coco18,
    fuse_runs,
    make_estimator,
    torso_length,
)
from pg2kit.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS

DATASETS = {"Market": "Market1501", "DeepFashion": "DeepFashion"}


def read_reference(csv_path: Path) -> dict[str, np.ndarray]:
    """Def-GAN CSV -> {file stem: (18, 2) xy float32, -1 missing}; reads the header's axis order."""
    lines = csv_path.read_text().splitlines()
    header = [h.strip() for h in lines[0].split(":")]
    y_first = header[1] == "keypoints_y"
    out = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        name, a, b = line.split(":")
        ys, xs = (json.loads(a), json.loads(b)) if y_first else (json.loads(b), json.loads(a))
        kp = np.stack([xs, ys], 1).astype(np.float32)
        kp[(kp[:, 0] < 0) | (kp[:, 1] < 0)] = -1
        out[Path(name.strip()).stem] = kp
    return out


def load_rgb(path: Path) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def agreement(pred: np.ndarray, ref: np.ndarray, height: int) -> dict[str, float]:
    """Metrics of predictions (N, 18, 2) against references (N, 18, 2); -1 = missing."""
    pp, rp = pred[..., 0] >= 0, ref[..., 0] >= 0
    both = pp & rp
    ref_person, our_person = rp.any(1), pp.any(1)
    d = np.linalg.norm(pred - ref, axis=-1)
    ys = np.where(rp, ref[..., 1], np.nan)
    with np.errstate(all="ignore"):
        ref_h = np.nanmax(ys, 1) - np.nanmin(ys, 1)  # y-extent of the reference person, px
    valid_h = both & (ref_h[:, None] > 0)
    delta = np.where(both[..., None], pred - ref, np.nan)
    with np.errstate(all="ignore"):
        offsets = np.nanmean(delta, axis=0)  # (18, 2) px, NaN where never both present
    return {
        "images": len(pred),
        "found": float((our_person & ref_person).mean()),
        "found_ref": float(our_person[ref_person].mean()) if ref_person.any() else float("nan"),
        "pck": float((d[both] <= 0.1 * height).mean()),
        "pck_ref": float((d <= 0.1 * ref_h[:, None])[valid_h].mean()),
        "vis": float((pp == rp).mean()),
        "pairs": int(both.sum()),
        "offsets": offsets,
    }


def fmt(m: dict) -> str:
    return (
        f"found {100 * m['found']:5.1f}% (of ref persons {100 * m['found_ref']:5.1f}%)  "
        f"PCK@0.1H {m['pck']:.3f}  PCK@0.1h_ref {m['pck_ref']:.3f}  "
        f"vis-agree {m['vis']:.3f}  ({m['pairs']} kp pairs)"
    )


def naive_baseline(images: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Plain MediaPipe on the unmodified image, one call, visibility > 0.5: (poses, images/s)."""
    from mediapipe.python.solutions import pose as mp_pose

    preds = []
    with mp_pose.Pose(static_image_mode=True, model_complexity=1) as pose:
        t0 = time.perf_counter()
        for img in images:
            h, w = img.shape[:2]
            res = pose.process(img)
            if res.pose_landmarks is None:
                preds.append(np.full((NUM_KEYPOINTS, 2), -1, np.float32))
                continue
            lm = np.array([(p.x, p.y, p.visibility) for p in res.pose_landmarks.landmark])
            lm[:, 0], lm[:, 1] = lm[:, 0] * w - 0.5, lm[:, 1] * h - 0.5
            preds.append(blazepose_to_coco18(lm, w, h, 0.5)[0])
        dt = time.perf_counter() - t0
    return preds, len(images) / dt


def fit_offsets(fused: list, refs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Median (reference - ours) per keypoint in torso lengths, person frame (see apply_offsets)."""
    rel: list[list[np.ndarray]] = [[] for _ in range(NUM_KEYPOINTS)]
    for i in idx:
        if fused[i] is None:
            continue
        xy, vis = fused[i]
        t = max(torso_length(xy), 1e-3)
        lateral = np.sign(xy[5, 0] - xy[2, 0]) or 1.0
        for k in range(NUM_KEYPOINTS):
            if refs[i, k, 0] >= 0 and vis[k] > 0.5:
                d = refs[i, k] - xy[k]
                rel[k].append(np.array([d[0] * lateral / t, d[1] / t]))
    off = np.zeros((NUM_KEYPOINTS, 2), np.float32)
    for k in range(NUM_KEYPOINTS):
        if k != 1 and len(rel[k]) >= 10:  # the neck follows the shoulders
            off[k] = np.median(np.stack(rel[k]), 0)
    return off


def fit_thresholds(fused: list, refs: np.ndarray, idx: np.ndarray, floor: float) -> np.ndarray:
    """Per-keypoint visibility threshold (>= floor) maximising present/missing agreement."""
    grid = np.round(np.arange(floor, 0.96, 0.05), 2)
    thr = np.full(NUM_KEYPOINTS, floor, np.float32)
    vis = np.stack([f[1] if f is not None else np.zeros(NUM_KEYPOINTS) for f in fused])[idx]
    ref_present = refs[idx, :, 0] >= 0
    for k in range(NUM_KEYPOINTS):
        scores = [((vis[:, k] > t) == ref_present[:, k]).sum() for t in grid]
        thr[k] = grid[int(np.argmax(scores))]  # first best: the lowest threshold among ties
    return thr


def predict(est, runs: list, shape: tuple[int, int], cfg: MediaPipeConfig | None = None):
    from pg2kit.estimators import MediaPipeEstimator

    e = est if cfg is None else MediaPipeEstimator(cfg)
    return e.finish(runs, shape[1], shape[0])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/realdev"))
    ap.add_argument("--folds", type=int, default=2, help="cross-validation folds (0: skip)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images per set")
    args = ap.parse_args()
    reference = read_reference(args.data / "annotations.csv")
    est = make_estimator("mediapipe")
    print(f"estimator {est.name} {est.version}")
    fitted = {}
    for label, folder in DATASETS.items():
        paths = sorted(p for p in (args.data / folder).iterdir() if p.stem in reference)
        if args.limit:
            paths = paths[: args.limit]
        images = [load_rgb(p) for p in paths]
        refs = np.stack([reference[p.stem] for p in paths])
        height = images[0].shape[0]
        # The estimator's own code path, split in two so the runs can be re-fused for CV below.
        runs_all, preds = [], []
        t0 = time.perf_counter()
        for img in images:
            runs = est.run_views(img)
            preds.append(est.finish(runs, img.shape[1], img.shape[0])[0])
            runs_all.append(runs)
        ips = len(images) / (time.perf_counter() - t0)
        base_preds, base_ips = naive_baseline(images)
        ours = agreement(np.stack(preds), refs, height)
        base = agreement(np.stack(base_preds), refs, height)
        print(f"\n== {label}: {len(images)} images {images[0].shape[1]}x{height} (W x H) ==")
        print(f"naive MediaPipe  {fmt(base)}  {base_ips:6.1f} img/s")
        print(f"pg2kit default   {fmt(ours)}  {ips:6.1f} img/s")
        print("mean offset ours - reference, px (dx, dy):")
        print(
            "  "
            + "  ".join(
                f"{n}({dx:+.1f},{dy:+.1f})"
                for n, (dx, dy) in zip(KEYPOINT_NAMES, ours["offsets"], strict=True)
            )
        )
        cfg = est.config
        fused = [fuse_runs(r, cfg.agree, cfg.fusion)[:2] if r else None for r in runs_all]
        idx_all = np.arange(len(images))
        fitted[label] = (
            fit_thresholds(fused, refs, idx_all, 0.5),
            fit_offsets(fused, refs, idx_all),
        )
        if args.folds >= 2:
            cross_validate(est, runs_all, fused, refs, images[0].shape[:2], args.folds, height)
    print("\nthresholds/offsets fitted on all images (for MediaPipeConfig defaults):")
    for label, (thr, off) in fitted.items():
        print(f"  {label} visibility {tuple(float(t) for t in thr)}")
        print(
            f"  {label} offsets {tuple((round(float(a), 3), round(float(b), 3)) for a, b in off)}"
        )


def cross_validate(est, runs_all, fused, refs, shape, folds, height) -> None:
    """Refit thresholds and offsets on K-1 folds; report train and held-out agreement per fold."""
    from dataclasses import replace

    perm = np.random.RandomState(0).permutation(len(runs_all))
    print(f"{folds}-fold CV of the tuned visibility thresholds (floor 0.5) and offsets:")
    for f in range(folds):
        test = np.sort(perm[f::folds])
        train = np.setdiff1d(np.arange(len(runs_all)), test)
        thr = fit_thresholds(fused, refs, train, 0.5)
        off = fit_offsets(fused, refs, train)
        variants = {
            "defaults": est.config,
            "refit": replace(
                est.config,
                visibility=tuple(float(t) for t in thr),
                offsets=tuple((float(a), float(b)) for a, b in off),
            ),
        }
        for name, cfg in variants.items():
            line = []
            for part, idx in (("train", train), ("held-out", test)):
                p = np.stack([predict(est, runs_all[i], shape, cfg) for i in idx])
                m = agreement(p, refs[idx], height)
                line.append(
                    f"{part} found {100 * m['found']:5.1f}% PCK {m['pck']:.3f} vis {m['vis']:.3f}"
                )
            print(f"  fold {f} {name:8s} " + " | ".join(line))


if __name__ == "__main__":
    main()
