"""Keypoint agreement of the person finder's two keypoint sources with reference rows.

    python bench/finder_keypoints.py [--data /work/shared/data/realdev] [--height 192]

Each annotated image of DATA/{Market1501,DeepFashion} (reference OpenPose COCO-18 rows in
DATA/annotations.csv) is scaled so the image is HEIGHT px tall and pasted whole (a rectangle with
its own background) at a random place on a 768x576 textured background. The person finder
detects once per scene; then keypoints come from each source on the same detection:

- `crop`: the MediaPipe estimator (its own detector, views and fusion) on the detector's box
  widened by 15% (FinderConfig.keypoints="crop", the default until this bench),
- `roi`: BlazePose's landmark model straight on the frame detector's ROI, as is and mirrored
  (FinderConfig.keypoints="roi"),
- `roi1`: the same, as is only (FinderConfig.roi_views=1: one landmark call per person).

Also the estimator alone on the pasted image's own rectangle (what `prepare folder` does on a
crop). Keypoints are mapped back to the original image and scored with bench/keypoint_agreement.py's
`agreement` (PCK at 0.1 x image height, present/missing agreement), on the whole set and on two
halves (split by file name order parity) for the spread. Gates are not applied (the score is of
keypoints, not of acceptance); a scene whose best detection matches the true box below IoU 0.3
counts as not found for both sources. Time per person of each source, single process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
from keypoint_agreement import agreement, read_reference  # bench/ is on sys.path when run

W, H = 768, 576


def _box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/realdev"))
    ap.add_argument("--height", type=int, default=192, help="pasted image height (px)")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()

    from pg2kit.persons import PersonFinder

    ref = read_reference(args.data / "annotations.csv")
    finders = {k: PersonFinder(keypoints=k) for k in ("crop", "roi")}
    finders["roi1"] = PersonFinder(keypoints="roi", roi_views=1)
    est = finders["crop"]._pose()
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(40, 220, (H, W, 3), dtype=np.uint8), (0, 0), 3)
    for folder in ("Market1501", "DeepFashion"):
        paths = sorted(p for p in (args.data / folder).glob("*.png") if p.stem in ref)
        if args.limit:
            paths = paths[: args.limit]
        preds = {"crop": [], "roi": [], "roi1": [], "estimator": []}
        secs = {"crop": 0.0, "roi": 0.0, "roi1": 0.0, "estimator": 0.0}
        refs, found = [], 0
        for path in paths:
            img = cv2.imread(str(path))[:, :, ::-1]
            s = args.height / img.shape[0]
            small = cv2.resize(img, (round(img.shape[1] * s), args.height), cv2.INTER_CUBIC)
            x = int(rng.integers(0, W - small.shape[1]))
            y = int(rng.integers(0, H - small.shape[0]))
            scene = tex.copy()
            scene[y : y + small.shape[0], x : x + small.shape[1]] = small
            scene = np.ascontiguousarray(scene)
            truth = (x, y, x + small.shape[1], y + small.shape[0])
            kp_ref = ref[path.stem]
            # the person's own extent inside the rectangle (DeepFashion photos are wider)
            vis = kp_ref[:, 0] >= 0
            body = (
                (x + kp_ref[vis, 0].min() * s, y + kp_ref[vis, 1].min() * s,
                 x + kp_ref[vis, 0].max() * s, y + kp_ref[vis, 1].max() * s)
                if vis.any() else truth
            )  # fmt: skip
            dets = finders["crop"].detect(scene)
            best = max(dets, key=lambda p: _box_iou(p.detector_box, body), default=None)
            refs.append(kp_ref)
            t0 = time.perf_counter()
            kp, _ = est(np.ascontiguousarray(scene[truth[1] : truth[3], truth[0] : truth[2]]))
            secs["estimator"] += time.perf_counter() - t0
            preds["estimator"].append(np.where(kp >= 0, kp / s, -1))
            ok = best is not None and _box_iou(best.detector_box, body) >= 0.3
            found += ok
            for k, f in finders.items():
                if not ok:
                    preds[k].append(np.full((18, 2), -1, np.float32))
                    continue
                t0 = time.perf_counter()
                p = f.estimate(scene, best, ())
                secs[k] += time.perf_counter() - t0
                kp = p.keypoints if p.keypoints is not None else np.full((18, 2), -1, np.float32)
                m = kp[:, 0] >= 0
                back = np.full((18, 2), -1, np.float32)
                back[m] = (kp[m] - (x, y)) / s
                preds[k].append(back)
        refs = np.stack(refs)
        height = cv2.imread(str(paths[0])).shape[0]
        print(f"\n== {folder}: {len(paths)} images, pasted {args.height} px tall; "
              f"detected (IoU >= 0.3) {found}/{len(paths)} ==")  # fmt: skip
        for k in ("estimator", "crop", "roi", "roi1"):
            pr = np.stack(preds[k])
            whole = agreement(pr, refs, height)
            halves = [agreement(pr[i::2], refs[i::2], height) for i in (0, 1)]
            n = len(paths) if k == "estimator" else max(found, 1)
            print(
                f"{k:9s} found {whole['found']:.3f}  PCK@0.1H {whole['pck']:.3f} "
                f"(halves {halves[0]['pck']:.3f} / {halves[1]['pck']:.3f})  "
                f"vis-agree {whole['vis']:.3f} (halves {halves[0]['vis']:.3f} / "
                f"{halves[1]['vis']:.3f})  {1000 * secs[k] / n:.0f} ms/person"
            )


if __name__ == "__main__":
    main()
