"""Person finding on composed multi-person scenes and a composed video, with known truth.

Real people from DATA (Market-1501 crops pasted as rectangles, full-body DeepFashion photos
matted off their studio wall by MediaPipe's selfie segmentation) are pasted at known boxes onto
procedural or texture backgrounds: 1-6 people per 768x576 scene, heights 48-400 px, some
partially overlapping. The people are split by identity into a `tune` and a `check` half; quote
the check figures.

Prints person recall per height band, precision, chimera rate (an accepted person whose
keypoints fall in two true persons), rejection reasons; on a composed video (people walking and
crossing) track purity and fragmentation; on >= 20 images without a person the number accepted
(`nobody`; `nobody-video`: the same images as short panned clips through `pg2kit prepare video`,
samples written; `blobs`: 20 seeded random binary-blob images, a hard no-person case); `alone`:
each person of the half alone at 110, 170, 260 and 360 px, the share accepted (the ceiling the
scenes' recall has before any crowd; `--alone-seed` draws other places and backgrounds); and the
speed of detect + estimate against the estimator alone on the same person crops.

`--via cli` runs the CLI instead of calling PersonFinder: each scene is written as the one
photo of its own identity folder and run through `pg2kit prepare folder`, the video is written
losslessly (FFV1 .avi) and run through `pg2kit prepare video`; the figures are computed from the
shards (source_box, keypoints mapped back to source pixels, track, frame) and failures.csv (each
person that was not the identity person or failed a gate is a row with its box and reason).
`--via both` also runs the library on the same images and counts outcome differences (scenes,
nobody and alone).

Usage:
  python bench/multiperson.py [--data /work/shared/data/realdev] [--half check] \
      [--scenes 30] [--seeds 100,101,102] [--video-frames 60] \
      [--parts scenes,video,nobody,nobody-video,blobs,alone,speed] \
      [--via library|cli|both]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

W, H = 768, 576
BANDS = ((48, 64), (64, 96), (96, 150), (150, 250), (250, 401))


# ------------------------------------------------------------------ real people


def _annotations(data: Path) -> dict[str, np.ndarray]:
    out = {}
    with open(data / "annotations.csv") as f:
        rows = csv.reader(f, delimiter=":")
        next(rows)
        for name, ys, xs in rows:
            y, x = json.loads(ys), json.loads(xs)
            kp = np.array(list(zip(x, y, strict=True)), np.float32)
            out[Path(name).stem] = kp
    return out


_SEGMENTER = None


def _df_matte(img: np.ndarray) -> np.ndarray:
    """Foreground mask of a DeepFashion studio photo: MediaPipe's selfie segmentation (in the
    mediapipe wheel) > 0.5, its largest component, holes filled. The first version thresholded
    the difference from the wall colour and lost light clothes on the light wall: on 17 of the 52
    full-body photos some annotated keypoints fell outside its matte (a white top or dress cut
    away, legs pasted as a "person"); with the segmenter, none does."""
    global _SEGMENTER
    if _SEGMENTER is None:
        import mediapipe as mp

        _SEGMENTER = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    prob = _SEGMENTER.process(np.ascontiguousarray(img)).segmentation_mask
    mask = (prob > 0.5).astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n <= 1:
        return mask.astype(bool)
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = (lab == big).astype(np.uint8)
    cnts, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(mask, cnts, -1, 1, thickness=-1)
    return mask.astype(bool)


def load_people(data: Path, half: str) -> list[dict]:
    """People of one half: {'image', 'mask', 'id'}; image cropped to the person's extent."""
    ann = _annotations(data)
    people = []
    for path in sorted((data / "Market1501").glob("*.png")):
        ident = int(path.name[:4])
        if (ident % 2 == 0) != (half == "tune"):
            continue
        img = cv2.imread(str(path))[:, :, ::-1]
        people.append({"image": img, "mask": np.ones(img.shape[:2], bool), "id": f"m{path.stem}"})
    for path in sorted((data / "DeepFashion").glob("*.png")):
        kp = ann.get(path.stem)
        # full body only: both ankles annotated
        if kp is None or kp[10, 0] < 0 or kp[13, 0] < 0:
            continue
        ident = sum(map(ord, path.stem.split("_")[0]))
        if (ident % 2 == 0) != (half == "tune"):
            continue
        img = cv2.imread(str(path))[:, :, ::-1]
        mask = _df_matte(img)
        ys, xs = np.nonzero(mask)
        if len(ys) < 500:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        if y1 - y0 < 150:
            continue
        people.append(
            {"image": img[y0:y1, x0:x1].copy(), "mask": mask[y0:y1, x0:x1], "id": f"d{path.stem}"}
        )
    return people


# ------------------------------------------------------------------ scenes


def background(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # street-like: sky/wall gradient, ground, blocks
        img = np.zeros((H, W, 3), np.float32)
        top, bottom = rng.uniform(60, 220, 3), rng.uniform(40, 180, 3)
        t = np.linspace(0, 1, H)[:, None, None]
        img[:] = top * (1 - t) + bottom * t
        for _ in range(rng.integers(3, 9)):
            x0, y0 = rng.integers(0, W), rng.integers(0, H // 2)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + rng.integers(40, 250)), int(y0 + rng.integers(40, 300))),
                          tuple(float(v) for v in rng.uniform(30, 230, 3)), -1)  # fmt: skip
        img += rng.normal(0, 6, img.shape)
    else:  # a texture from scikit-image's bundled images, tinted
        from skimage import data as skd

        tex = getattr(skd, ("brick", "grass", "gravel")[rng.integers(3)])()
        tex = cv2.resize(tex, (W, H)).astype(np.float32)[..., None]
        img = tex * rng.uniform(0.5, 1.1, 3) + rng.uniform(0, 60, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def paste(img: np.ndarray, person: dict, x: int, y: int, height: int, labels=None, label=0):
    """Paste `person` scaled to `height` with its top-left at (x, y); returns its true box.
    With `labels` (H, W) int, the pasted (visible) pixels are set to `label` there."""
    src, mask = person["image"], person["mask"]
    h, w = src.shape[:2]
    width = max(4, round(w * height / h))
    interp = cv2.INTER_AREA if height < h else cv2.INTER_CUBIC
    s = cv2.resize(src, (width, height), interpolation=interp)
    m = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(
        bool
    )
    cx0, cy0 = max(0, -x), max(0, -y)
    cx1, cy1 = min(width, W - x), min(height, H - y)
    if cx1 <= cx0 or cy1 <= cy0:
        return (x, y, x + width, y + height)
    region = img[y + cy0 : y + cy1, x + cx0 : x + cx1]
    mm = m[cy0:cy1, cx0:cx1]
    region[mm] = s[cy0:cy1, cx0:cx1][mm]
    if labels is not None:
        labels[y + cy0 : y + cy1, x + cx0 : x + cx1][mm] = label
    return (x, y, x + width, y + height)


def covered(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


def make_scene(rng: np.random.Generator, people: list[dict]) -> tuple[np.ndarray, list[dict]]:
    img = background(rng)
    labels = np.full((H, W), -1, np.int16)  # visible pixels: index of the person painted there
    n = int(rng.integers(1, 7))
    truth: list[dict] = []
    for _ in range(n):
        p = people[rng.integers(len(people))]
        height = int(round(np.exp(rng.uniform(np.log(48), np.log(400)))))
        width = round(p["image"].shape[1] * height / p["image"].shape[0])
        if truth and rng.random() < 0.35:  # partial overlap with someone already there
            o = truth[rng.integers(len(truth))]["box"]
            frac = rng.uniform(0.05, 0.6)
            side = 1 if rng.random() < 0.5 else -1
            ow = o[2] - o[0]
            x = int(o[0] + side * (1 - frac) * ow) if side > 0 else int(o[0] - width + frac * ow)
            y = int(o[3] - height + rng.integers(-20, 21))
        else:
            x = int(rng.integers(0, max(1, W - width)))
            y = int(rng.integers(0, max(1, H - height)))
        if rng.random() < 0.08:  # now and then someone cut by the frame edge
            y = H - int(height * rng.uniform(0.5, 0.85))
        box = paste(img, p, x, y, height, labels, len(truth))
        truth.append({"box": box, "height": height, "id": p["id"], "labels": labels,
                      "label": len(truth)})  # fmt: skip
    for t in truth:
        b = t["box"]
        t["overlap"] = max((covered(b, o["box"]) for o in truth if o is not t), default=0.0)
        t["cut"] = b[0] < 0 or b[1] < 0 or b[2] > W or b[3] > H
    return img, truth


# ------------------------------------------------------------------ scoring


def owner_counts(kp: np.ndarray, truth: list[dict]) -> np.ndarray:
    """Per true person, how many present keypoints fall inside its box (5% slack)."""
    pts = kp[kp[:, 0] >= 0]
    out = np.zeros(len(truth), int)
    for j, t in enumerate(truth):
        x0, y0, x1, y1 = t["box"]
        s = 0.05 * (y1 - y0)
        out[j] = int(
            (
                (pts[:, 0] >= x0 - s)
                & (pts[:, 0] <= x1 + s)
                & (pts[:, 1] >= y0 - s)
                & (pts[:, 1] <= y1 + s)
            ).sum()
        )
    return out


def is_chimera(kp: np.ndarray, truth: list[dict], owner: int) -> bool:
    """Two or more keypoints inside another true person's box and outside the owner's."""
    pts = kp[kp[:, 0] >= 0]
    ob = truth[owner]["box"]
    s = 0.05 * (ob[3] - ob[1])
    out_owner = ~(
        (pts[:, 0] >= ob[0] - s)
        & (pts[:, 0] <= ob[2] + s)
        & (pts[:, 1] >= ob[1] - s)
        & (pts[:, 1] <= ob[3] + s)
    )
    for j, t in enumerate(truth):
        if j == owner:
            continue
        x0, y0, x1, y1 = t["box"]
        inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        if (inside & out_owner).sum() >= 2:
            return True
    return False


def score_scene(persons, truth) -> dict:
    """Match accepted persons to true persons; recall bookkeeping per true person."""
    res = {"tp": 0, "fp": 0, "chimera": 0, "accepted": 0, "chimera_le30": 0, "accepted_le30": 0,
           "found": [], "reasons": []}  # fmt: skip
    taken: set[int] = set()
    res["no_keypoints"] = 0
    for p in persons:
        if p.reason is not None:
            continue
        res["accepted"] += 1
        if p.keypoints is None:
            # CLI mode: a person accepted but not the photo's identity person is only a box in
            # failures.csv; it belongs to the true person covering most of it (>= half)
            cov = np.array([covered(p.box, t["box"]) for t in truth])
            owner = int(np.argmax(cov)) if len(truth) else -1
            if owner < 0 or cov[owner] < 0.5 or owner in taken:
                res["fp"] += 1
                continue
            taken.add(owner)
            res["tp"] += 1
            res["no_keypoints"] += 1
            continue
        owner = owner_index(p.keypoints, truth)
        if owner < 0 or owner in taken:
            res["fp"] += 1
            continue
        taken.add(owner)
        res["tp"] += 1
        chim = is_chimera(p.keypoints, truth, owner)
        res["chimera"] += chim
        if truth[owner]["overlap"] <= 0.3:
            res["accepted_le30"] += 1
            res["chimera_le30"] += chim
    for j, t in enumerate(truth):
        why = "not detected"
        if j in taken:
            why = "accepted"
        else:
            best = 0.0
            for p in persons:
                if p.reason is None:
                    continue
                c = min(covered(p.box, t["box"]), covered(t["box"], p.box))
                if c > best and c > 0.3:
                    best, why = c, p.reason.split(":")[0]
        res["found"].append((t["height"], t["overlap"], t["cut"], j in taken))
        res["reasons"].append(why)
    return res


def band_of(h: float) -> str | None:
    for lo, hi in BANDS:
        if lo <= h < hi:
            return f"{lo}-{hi - 1}"
    return None


def make_scenes(people, seed, n_scenes) -> list[tuple[np.ndarray, list[dict]]]:
    rng = np.random.default_rng(seed)
    return [make_scene(rng, people) for _ in range(n_scenes)]


def summarize_scenes(seed, scored: list[dict], quiet: bool = False) -> dict:
    agg = {"tp": 0, "fp": 0, "chimera": 0, "accepted": 0, "chimera_le30": 0, "accepted_le30": 0,
           "no_keypoints": 0}  # fmt: skip
    bands: dict[str, list[int]] = {}
    reasons: dict[str, int] = {}
    cut_people = cut_accepted = 0
    for res in scored:
        for k in agg:
            agg[k] += res[k]
        for (h, ov, cut, ok), why in zip(res["found"], res["reasons"], strict=True):
            if cut and h >= 96:
                cut_people += 1
                cut_accepted += ok
            if cut or ov > 0.3:
                continue  # recall counts people fully in frame, overlapped <= 30%
            b = band_of(h)
            bands.setdefault(b, [0, 0])
            bands[b][0] += ok
            bands[b][1] += 1
            if not ok:
                reasons[f"{b}: {why}"] = reasons.get(f"{b}: {why}", 0) + 1
    big = [bands[b] for b in bands if int(b.split("-")[0]) >= 96]
    with_kp = agg["tp"] - agg["no_keypoints"]
    s = {
        **agg,
        "precision": agg["tp"] / max(1, agg["accepted"]),
        "chimera_rate": agg["chimera"] / max(1, with_kp),
        "chimera_rate_le30": agg["chimera_le30"] / max(1, agg["accepted_le30"]),
        "recall_ge96": sum(f for f, _ in big) / max(1, sum(n for _, n in big)),
        "bands": {
            b: (f, n, f / max(1, n))
            for b, (f, n) in sorted(bands.items(), key=lambda kv: int(kv[0].split("-")[0]))
        },
        "missed": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "cut_accepted": (cut_accepted, cut_people),
    }
    if not quiet:
        print(f"seed {seed}: precision {s['precision']:.3f} ({s['tp']}/{s['accepted']}), "
              f"chimera {s['chimera']}/{with_kp} (overlap<=30%: {s['chimera_le30']}/{s['accepted_le30']})"
              + (f" [{s['no_keypoints']} accepted persons only as boxes in failures.csv, judged by box]"
                 if s["no_keypoints"] else "")
              + f", recall>=96px {s['recall_ge96']:.3f}", flush=True)  # fmt: skip
        for b, (f, n, r) in s["bands"].items():
            print(f"   {b:>8} px: recall {r:.3f} ({f}/{n})")
        print("   missed:", s["missed"])
        print(
            f"   people >= 96 px cut by the frame edge (truth) accepted: {cut_accepted} of {cut_people}"
        )
    return s


def run_scenes(find, people, seeds, n_scenes, compare=None) -> dict:
    """`find(seed, images)` -> persons per image. With `compare` (a second find), also count
    the true persons whose outcome (accepted / rejection reason) differs between the two."""
    per_seed = {}
    for seed in seeds:
        scenes = make_scenes(people, seed, n_scenes)
        images = [img for img, _ in scenes]
        scored = [score_scene(ps, t) for ps, (_, t) in zip(find(seed, images), scenes, strict=True)]
        per_seed[seed] = summarize_scenes(seed, scored)
        if compare is not None:
            other = [
                score_scene(ps, t) for ps, (_, t) in zip(compare(seed, images), scenes, strict=True)
            ]
            ref = summarize_scenes(seed, other, quiet=True)
            diff = [
                (k, j, a, b)
                for k, (r1, r2) in enumerate(zip(scored, other, strict=True))
                for j, (a, b) in enumerate(zip(r1["reasons"], r2["reasons"], strict=True))
                if a != b
            ]
            n = sum(len(r["reasons"]) for r in scored)
            print(f"   library on the same images: precision {ref['precision']:.3f} "
                  f"({ref['tp']}/{ref['accepted']}), recall>=96px {ref['recall_ge96']:.3f}; "
                  f"outcome differs for {len(diff)} of {n} true persons {diff[:8]}", flush=True)  # fmt: skip
            per_seed[seed]["library_same_images"] = {
                k: ref[k] for k in ("precision", "recall_ge96", "tp", "accepted", "chimera")
            } | {"outcome_differs": len(diff), "persons": n}
    return per_seed


def library_find(finder):
    def find(seed, images):
        return [finder(img) for img in images]

    return find


# ------------------------------------------------------------------ through the CLI


class _Found:
    """A person as the CLI's outputs tell it: box, reason and (shard samples only) keypoints in
    source pixels."""

    def __init__(self, box, reason=None, keypoints=None):
        self.box = np.asarray(box, np.float32)
        self.reason = reason
        self.keypoints = keypoints


def _run_cli(args: list[str], log: Path) -> int:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pg2kit.cli", *args]
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    print(f"   ran: pg2kit {' '.join(args)} -> exit {rc} in {time.perf_counter() - t0:.0f} s "
          f"(log {log})", flush=True)  # fmt: skip
    return rc


def _read_samples(out: Path) -> list[dict]:
    """Shard samples with keypoints mapped back to source pixels (inverse of crop_person)."""
    from pg2kit import shards
    from pg2kit.persons import crop_geometry

    if not (out / shards.MANIFEST).exists():
        return []
    manifest = shards.load_manifest(out)
    fields = ("keypoints", "source_path", "source_box", "track", "frame", "detector_score")
    samples = []
    for split in manifest["splits"]:
        if not manifest["splits"][split]["count"]:
            continue
        size = (int(manifest["frame"]["height"]), int(manifest["frame"]["width"]))
        d = shards.read_split_fields(out, split, fields)
        for i in range(len(d["source_path"])):
            box = d["source_box"][i]
            x0, y0, cw, ch = crop_geometry(box, size)
            kp = d["keypoints"][i].copy()
            ok = kp[:, 0] >= 0
            kp[ok, 0] = (kp[ok, 0] + 0.5) * cw / size[1] - 0.5 + x0
            kp[ok, 1] = (kp[ok, 1] + 0.5) * ch / size[0] - 0.5 + y0
            samples.append({"path": str(d["source_path"][i]), "box": box, "keypoints": kp,
                            "track": int(d["track"][i]), "frame": int(d["frame"][i])})  # fmt: skip
    return samples


def _read_failures(out: Path) -> list[tuple[str, str]]:
    path = out / "failures.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(r["path"], r["reason"]) for r in csv.DictReader(f)]


_PERSON_ROW = None


def _parse_person_row(reason: str):
    """'person 2 of 3 at (x0,y0)-(x1,y1): why' -> (box, why) or None."""
    import re

    global _PERSON_ROW
    if _PERSON_ROW is None:
        _PERSON_ROW = re.compile(
            r"person \d+ of \d+ at \((-?\d+),(-?\d+)\)-\((-?\d+),(-?\d+)\): (.*)"
        )
    m = _PERSON_ROW.match(reason)
    if not m:
        return None
    return [float(v) for v in m.groups()[:4]], m.group(5)


def cli_folder_find(workdir: Path, workers: int, extra: list[str]):
    """Each image as the one photo of its own identity folder, through `pg2kit prepare folder`;
    persons = the shard sample (keypoints) + the failures.csv rows (box and reason; a person
    that passed every gate but is not the identity person counts as accepted, by its box)."""

    def find(tag, images):
        import shutil

        src, out = workdir / f"{tag}_src", workdir / f"{tag}_out"
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        for k, img in enumerate(images):
            (src / f"s{k:03d}").mkdir(parents=True)
            cv2.imwrite(str(src / f"s{k:03d}" / "scene.png"), np.ascontiguousarray(img[:, :, ::-1]))
        _run_cli(["prepare", "folder", str(src), "-o", str(out), "--workers", str(workers),
                  "--quiet", *extra], workdir / f"{tag}.log")  # fmt: skip
        persons: list[list] = [[] for _ in images]
        for s in _read_samples(out):
            k = int(s["path"].split("/")[0][1:])
            persons[k].append(_Found(s["box"], None, s["keypoints"]))
        for path, reason in _read_failures(out):
            if not path.startswith("s"):
                continue
            k = int(path.split("/")[0][1:])
            row = _parse_person_row(reason)
            if row is None:
                continue  # 'no person found' and the like: nothing to score
            box, why = row
            accepted = why.startswith("not the identity person")
            persons[k].append(_Found(box, None if accepted else why))
        return persons

    return find


# ------------------------------------------------------------------ video


def make_video(people, seed, frames) -> tuple[list[np.ndarray], list[list[dict]], int]:
    """Frames of 3-5 real people walking and crossing, with each frame's true boxes."""
    rng = np.random.default_rng(seed)
    bg = background(rng)
    k = int(rng.integers(3, 6))
    walkers = []
    for i in range(k):
        p = people[rng.integers(len(people))]
        h0 = float(rng.uniform(110, 260))
        direction = 1 if i % 2 == 0 else -1  # alternate directions so people cross
        x_start = -0.1 * W if direction > 0 else 1.05 * W
        speed = rng.uniform(6, 14) * direction
        x_start += rng.uniform(0, 0.5) * W * direction
        feet = float(rng.uniform(h0 + 10, H - 5))
        walkers.append({"p": p, "h": h0, "x": x_start, "v": speed, "feet": feet, "id": i})
    images, truths = [], []
    for f in range(frames):
        img = bg.copy()
        labels = np.full((H, W), -1, np.int16)
        truth = []
        # far people first (smaller feet y), nearer ones painted over them
        for wk in sorted(walkers, key=lambda w: w["feet"]):
            x = int(wk["x"] + wk["v"] * f)
            h = int(wk["h"])
            box = paste(img, wk["p"], x, int(wk["feet"] - h), h, labels, wk["id"])
            truth.append({"box": box, "height": h, "id": wk["id"], "labels": labels,
                          "label": wk["id"]})  # fmt: skip
        images.append(img)
        truths.append(truth)
    return images, truths, k


def owner_index(kp: np.ndarray, truth: list[dict]) -> int:
    """Index of the true person a keypoint set shows (-1: none): among those whose box holds
    >= half of its keypoints, the one whose visible pixels (label map; 3 px slack) hold most of
    them. Where one person stands in front of another their boxes overlap or nest, and box
    counts alone (the first version) gave the keypoints to whoever came first in the list (in a
    scene, a small person pasted over a tall one's legs was scored as the tall one, and the tall
    one's own detection as a false positive)."""
    counts = owner_counts(kp, truth)
    n = (kp[:, 0] >= 0).sum()
    ok = [j for j in range(len(truth)) if counts[j] >= 0.5 * n]
    if not ok:
        return -1
    labels = truth[0].get("labels")
    if labels is None or len(ok) == 1:
        return max(ok, key=lambda j: counts[j])
    votes = dict.fromkeys(ok, 0)
    for x, y in kp[kp[:, 0] >= 0]:
        xi, yi = int(round(float(x))), int(round(float(y)))
        near = labels[max(0, yi - 3) : yi + 4, max(0, xi - 3) : xi + 4]
        for j in ok:
            votes[j] += bool((near == truth[j]["label"]).any())
    best = max(votes.values())
    if best == 0:
        return max(ok, key=lambda j: counts[j])
    # ties between visible persons: the nearer one (painted later) wins
    return [j for j in ok if votes[j] == best][-1]


def _owner(kp: np.ndarray, truth: list[dict]) -> int:
    """The true walker (id) a video sample shows, or -1."""
    j = owner_index(kp, truth)
    return truth[j]["id"] if j >= 0 else -1


def score_video(seed, k, samples, min_track, label) -> dict:
    """samples: (track, true walker or -1); tracks with < min_track samples are dropped (as
    `prepare video --min-track` does)."""
    tracks: dict[int, list[int]] = {}
    for tid, wid in samples:
        tracks.setdefault(tid, []).append(wid)
    tracks = {t: v for t, v in tracks.items() if len(v) >= min_track}
    n = sum(len(v) for v in tracks.values())
    pure = sum(max(v.count(x) for x in set(v)) for v in tracks.values())
    purity = pure / max(1, n)
    per_person: dict[int, set] = {}
    for tid, v in tracks.items():
        major = max(set(v), key=v.count)
        per_person.setdefault(major, set()).add(tid)
    frag = statistics.mean(len(s) for s in per_person.values()) if per_person else float("nan")
    out = {"seed": seed, "walkers": k, "samples": n, "tracks": len(tracks),
           "purity": purity, "fragmentation": frag,
           "track_sizes": sorted((len(v) for v in tracks.values()), reverse=True)}  # fmt: skip
    print(f"video seed {seed} ({label}): {k} walkers, {n} samples in {len(tracks)} tracks "
          f"(min-track {min_track}), purity {purity:.3f} ({pure}/{n}), fragmentation {frag:.2f} "
          f"tracks/person, sizes {out['track_sizes']}", flush=True)  # fmt: skip
    return out


def run_video(finder, people, seed, frames, tracker_kind="own", min_track=3,
              detect_every=1, appearance=(0.0, 0.0), follow_views=2) -> dict:  # fmt: skip
    """Library mode, the same steps as `prepare video`: detect (every `detect_every`-th frame;
    between, follow each person with the landmark model), estimate and gate every person,
    drop duplicates, track the persons' boxes (pg2kit.tracking.Tracker), keep accepted tracked
    persons, cut and join tracks by appearance (`appearance` = (split, join) distances, as
    `prepare video --appearance-split/--appearance-join`; 0 off), drop short tracks.
    `follow_views`: landmark-model runs per followed person, as `prepare video --follow-views`."""
    from collections import defaultdict
    from dataclasses import replace

    from pg2kit.datasets.video import regroup_tracks
    from pg2kit.persons import DUPLICATE, PersonFinder
    from pg2kit.prepare import DetectedPersons, _default_pad
    from pg2kit.tracking import Tracker

    images, truths, k = make_video(people, seed, frames)
    tracker = _SupervisionTracker() if tracker_kind == "supervision" else Tracker()
    follower = PersonFinder(replace(finder.config, keypoints="roi", roi_views=follow_views))
    maker = DetectedPersons((128, 64), _default_pad(), {})  # prepare video's default frame
    per_track = defaultdict(list)  # track -> samples (Found, with .owner = true walker)
    done = []
    for f, (img, truth) in enumerate(zip(images, truths, strict=True)):
        if f % detect_every == 0:  # as prepare video --detect-every (follow_in_frames)
            done = finder.find(img)
        else:
            cands = [q for q in map(follower.follow, done) if q is not None]
            done = follower.estimate_all(img, cands)
        done = [p for p in done if not (p.reason or "").startswith(DUPLICATE)]
        boxes = np.array([p.box for p in done], np.float32).reshape(-1, 4)
        scores = np.array([p.score for p in done], np.float32)
        if tracker_kind == "supervision":
            ids = tracker.update(f, boxes, scores)
        else:  # as prepare video: accepted persons start tracks
            ids = tracker.update(f, boxes, scores, [p.reason is None for p in done])
        for p, tid in zip(done, ids, strict=True):
            if p.reason is None and tid >= 0:
                found = maker.sample(img, p, frame=f)
                found.owner = _owner(p.keypoints, truth)
                per_track[int(tid)].append(found)
    per_track = regroup_tracks(per_track, *appearance)[0]
    samples = [(t, s.owner) for t, v in per_track.items() for s in v]  # (track, true walker)
    return score_video(seed, k, samples, min_track, f"library, {tracker_kind} tracker")


def run_video_cli(people, seed, frames, workdir: Path, workers: int, min_track=3,
                  extra=()) -> dict:  # fmt: skip
    """The video written losslessly (FFV1) and run through `pg2kit prepare video`; samples and
    tracks read back from the shards."""
    import shutil

    images, truths, k = make_video(people, seed, frames)
    path = workdir / f"video{seed}.avi"
    out = workdir / f"video{seed}_out"
    shutil.rmtree(out, ignore_errors=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (W, H))
    if not vw.isOpened():
        raise RuntimeError("OpenCV cannot write FFV1 video here")
    for img in images:
        vw.write(np.ascontiguousarray(img[:, :, ::-1]))
    vw.release()
    _run_cli(["prepare", "video", str(path), "-o", str(out), "--workers", str(workers),
              "--min-track", str(min_track), "--quiet", *extra], workdir / f"video{seed}.log")  # fmt: skip
    samples = [(s["track"], _owner(s["keypoints"], truths[s["frame"]])) for s in _read_samples(out)]
    return score_video(seed, k, samples, min_track, "CLI prepare video")


class _SupervisionTracker:
    """supervision's ByteTrack behind the Tracker.update interface (comparison only)."""

    def __init__(self):
        import supervision as sv

        self.sv = sv
        self.t = sv.ByteTrack()

    def update(self, frame, boxes, scores):
        det = self.sv.Detections(
            xyxy=boxes.astype(np.float32), confidence=scores, class_id=np.zeros(len(boxes), int)
        )
        out = self.t.update_with_detections(det)
        ids = np.full(len(boxes), -1)
        # map back by IoU (supervision returns its own boxes)
        from pg2kit.tracking import iou_matrix

        if len(out) and len(boxes):
            m = iou_matrix(boxes, out.xyxy)
            for i in range(len(boxes)):
                j = int(np.argmax(m[i]))
                if m[i, j] > 0.5:
                    ids[i] = int(out.tracker_id[j])
        return ids


# ------------------------------------------------------------------ no person


def nobody_images(data: Path) -> list[tuple[str, np.ndarray]]:
    from skimage import data as skd

    out = []
    names = ("coffee", "chelsea", "rocket", "horse", "moon", "page", "text", "brick", "grass",
             "gravel", "clock", "coins", "cell", "hubble_deep_field", "immunohistochemistry",
             "retina", "logo", "colorwheel", "checkerboard", "binary_blobs", "shepp_logan_phantom")  # fmt: skip
    for n in names:
        # binary_blobs is random unless seeded (an unseeded one made the figure vary by run)
        im = np.asarray(skd.binary_blobs(rng=0) if n == "binary_blobs" else getattr(skd, n)())
        if im.dtype == bool:
            im = im.astype(np.uint8) * 255
        if im.dtype != np.uint8:
            im = (255 * (im - im.min()) / max(1e-9, float(im.max() - im.min()))).astype(np.uint8)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, 2)
        out.append((n, np.ascontiguousarray(im[..., :3])))
    left, _right, _disp = skd.stereo_motorcycle()
    out.append(("stereo_motorcycle", left))
    rng = np.random.default_rng(7)
    for i in range(10):  # procedural: noise, stripes, blobs ("fruit"), empty streets
        kind = i % 5
        if kind == 0:
            im = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        elif kind == 1:
            yy, xx = np.mgrid[0:H, 0:W]
            im = np.repeat(
                ((np.sin(xx / rng.uniform(3, 20)) * np.cos(yy / rng.uniform(3, 20))) * 100 + 128)[
                    ..., None
                ],
                3,
                2,
            )
        elif kind == 2:
            im = np.full((H, W, 3), rng.uniform(150, 240, 3), np.float32)
            for _ in range(12):  # round fruit-like blobs on a table
                c = (int(rng.integers(50, W - 50)), int(rng.integers(50, H - 50)))
                cv2.ellipse(im, c, (int(rng.integers(20, 70)), int(rng.integers(20, 70))), 0, 0, 360,
                            tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)  # fmt: skip
        else:
            im = background(rng)
        out.append((f"procedural{i}", np.clip(im, 0, 255).astype(np.uint8)))
    for path in sorted((data / "DeepFashion").glob("*6flat.png")):  # garments, no person
        out.append((path.stem, cv2.imread(str(path))[:, :, ::-1].copy()))
    return out


def run_nobody(find, data) -> dict:
    imgs = nobody_images(data)
    accepted = []
    rejected = 0
    for (name, _), ps in zip(imgs, find("nobody", [im for _, im in imgs]), strict=True):
        rejected += sum(p.reason is not None for p in ps)
        if any(p.reason is None for p in ps):
            accepted.append(name)
    print(f"no-person images: {len(imgs)}, accepted persons in {len(accepted)} {accepted}, "
          f"candidates rejected by the gates {rejected}")  # fmt: skip
    return {"images": len(imgs), "accepted": accepted, "rejected_candidates": rejected}


def blob_images(n: int = 20) -> list[tuple[str, np.ndarray]]:
    """scikit-image's random binary blobs (512 x 512, seeds 0..n-1): a hard no-person case,
    limb-like white shapes on black."""
    from skimage import data as skd

    out = []
    for seed in range(n):
        im = skd.binary_blobs(rng=seed).astype(np.uint8) * 255
        out.append((f"binary_blobs{seed}", np.repeat(im[..., None], 3, 2)))
    return out


def run_blobs(find, n: int = 20) -> dict:
    imgs = blob_images(n)
    accepted = [name for (name, _), ps in zip(imgs, find("blobs", [im for _, im in imgs]),
                                              strict=True) if any(p.reason is None for p in ps)]  # fmt: skip
    print(f"binary blobs: {len(imgs)} images, accepted persons in {len(accepted)} {accepted}")
    return {"images": len(imgs), "accepted": accepted}


ALONE_HEIGHTS = (110, 170, 260, 360)


def run_alone(find, people, seed: int = 0, compare=None) -> dict:
    """Each person of the half alone on a background at each of ALONE_HEIGHTS, placed at random
    wholly inside the frame: the share accepted is what the finder can reach on these people
    before any crowd (what the scenes lose beyond it comes from the other people). Outcome per
    person and height; a person rejected at one height and accepted at another says the
    rejection came from the placement and background, not from the photo. With `compare` (a
    second find, `--via both`), also the images whose outcome differs between the two."""
    rng = np.random.default_rng(seed)
    images, truths = [], []
    for p in people:
        for height in ALONE_HEIGHTS:
            img = background(rng)
            width = round(p["image"].shape[1] * height / p["image"].shape[0])
            x = int(rng.integers(0, W - width))
            y = int(rng.integers(0, H - height))
            labels = np.full((H, W), -1, np.int16)
            box = paste(img, p, x, y, height, labels, 0)
            images.append(img)
            truths.append([{"box": box, "height": height, "id": p["id"], "labels": labels,
                            "label": 0, "overlap": 0.0, "cut": False}])  # fmt: skip
    found = find(f"alone{seed}", images)
    outcome: dict[str, dict[int, str]] = {}
    false_pos: list[tuple[str, int]] = []
    scored = [score_scene(ps, truth) for ps, truth in zip(found, truths, strict=True)]
    for res, truth in zip(scored, truths, strict=True):
        if res["fp"]:
            false_pos.append((truth[0]["id"], truth[0]["height"]))
        outcome.setdefault(truth[0]["id"], {})[truth[0]["height"]] = res["reasons"][0]
    out: dict = {"heights": ALONE_HEIGHTS}
    for kind, name in (("m", "Market"), ("d", "DeepFashion")):
        rows = {k: v for k, v in outcome.items() if k[0] == kind}
        whys = [w for v in rows.values() for w in v.values()]
        if not whys:
            continue
        acc = sum(w == "accepted" for w in whys)
        per_h = {
            h: sum(v[h] == "accepted" for v in rows.values()) / len(rows) for h in ALONE_HEIGHTS
        }
        fails = dict(Counter(w for w in whys if w != "accepted"))
        some = sum(any(w != "accepted" for w in v.values()) for v in rows.values())
        always = sum(all(w != "accepted" for w in v.values()) for v in rows.values())
        print(f"alone, {name}: accepted {acc}/{len(whys)} = {acc / len(whys):.3f}; per height "
              + ", ".join(f"{h} px {r:.3f}" for h, r in per_h.items())
              + f"; people rejected at some height {some} of {len(rows)}, at every height {always}")  # fmt: skip
        print("   rejected:", dict(sorted(fails.items(), key=lambda kv: -kv[1])))
        out[name] = {"accepted": acc, "n": len(whys), "per_height": per_h, "rejected": fails,
                     "people_some": some, "people_all": always}  # fmt: skip
    print(f"alone: images with a person accepted that is not the pasted one: {len(false_pos)} "
          f"{false_pos}")  # fmt: skip
    out["false_positive_images"] = false_pos
    if compare is not None:
        other = [score_scene(ps, t) for ps, t in zip(compare(f"alone{seed}", images), truths,
                                                      strict=True)]  # fmt: skip
        diff = [(t[0]["id"], t[0]["height"], a["reasons"][0], b["reasons"][0], a["fp"], b["fp"])
                for a, b, t in zip(scored, other, truths, strict=True)
                if (a["reasons"][0], a["fp"]) != (b["reasons"][0], b["fp"])]  # fmt: skip
        print(f"alone, library on the same images: outcome or false positives differ on "
              f"{len(diff)} of {len(images)} images {diff[:8]}", flush=True)  # fmt: skip
        out["library_differs"] = len(diff)
    return out


def run_nobody_video(data: Path, workdir: Path, workers: int, frames: int = 16, extra=()) -> dict:
    """Each no-person image as a clip of `frames` frames (the image panned 1 px per frame, so
    the frames differ), all in one folder through `pg2kit prepare video` (defaults): samples
    written (the target is 0)."""
    import shutil

    src, out = workdir / "nobody_videos", workdir / "nobody_videos_out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    src.mkdir(parents=True)
    names = []
    for name, img in nobody_images(data):
        h, w = img.shape[:2]
        h, w = h - h % 2, w - w % 2 - frames
        vw = cv2.VideoWriter(str(src / f"{name}.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 10, (w, h))
        for t in range(frames):
            vw.write(np.ascontiguousarray(img[:h, t : t + w, ::-1]))
        vw.release()
        names.append(name)
    rc = _run_cli(["prepare", "video", str(src), "-o", str(out), "--workers", str(workers),
                   "--quiet", *extra], workdir / "nobody_videos.log")  # fmt: skip
    samples = _read_samples(out) if rc == 0 else []
    # prepare's closing summary (also when it wrote nothing and so left no manifest)
    closing = [line for line in (workdir / "nobody_videos.log").read_text().splitlines()
               if line.startswith(("videos ", "rejections:"))]  # fmt: skip
    videos = sorted({Path(str(s["source_path"])).stem for s in samples})
    print(f"no-person videos: {len(names)} clips of {frames} frames, exit {rc}, samples written "
          f"{len(samples)} {videos}; prepare's summary: {' / '.join(closing)}")  # fmt: skip
    return {"clips": len(names), "samples": len(samples), "videos_with_samples": videos, "rc": rc}


# ------------------------------------------------------------------ speed


def run_speed(finder, people, n_frames=8) -> dict:
    from pg2kit.estimators import MediaPipeEstimator

    rng = np.random.default_rng(5)
    frames = []
    for _ in range(n_frames):  # ~5 people, 100-300 px, side by side
        img = background(rng)
        xs = np.linspace(10, W - 130, 5) + rng.integers(-10, 10, 5)
        for x in xs:
            p = people[rng.integers(len(people))]
            h = int(rng.uniform(100, 300))
            paste(img, p, int(x), int(rng.integers(0, H - h)), h)
        frames.append(img)
    finder(frames[0])  # warm up the models
    t_det = t_est = t_find = 0.0
    crops = []
    n_persons = 0
    for img in frames:
        t0 = time.perf_counter()
        det = finder.detect(img)
        t1 = time.perf_counter()
        finder.estimate_all(img, det)
        t2 = time.perf_counter()
        # the whole finder (segmentation proposals and their estimates too, when configured)
        done = finder.find(img)
        t_find += time.perf_counter() - t2
        t_det += t1 - t0
        t_est += t2 - t1
        n_persons += sum(p.reason is None for p in done)
        for p in det:  # the same crops the finder gives the estimator
            b = p.detector_box
            if b[3] - b[1] < finder.config.min_person_px:
                continue
            m = finder.config.estimate_margin * (b[3] - b[1])
            x0, y0 = int(max(0, b[0] - m)), int(max(0, b[1] - m))
            x1, y1 = int(min(W, b[2] + m)), int(min(H, b[3] + m))
            crops.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
    est = MediaPipeEstimator()
    est(crops[0])
    t0 = time.perf_counter()
    for c in crops:
        est(c)
    t_base = time.perf_counter() - t0
    total = t_find
    out = {"frames": n_frames, "persons_accepted": n_persons, "crops": len(crops),
           "frames_per_s": n_frames / total, "persons_per_s": n_persons / total,
           "detect_ms_per_frame": 1000 * t_det / n_frames, "estimate_ms_per_frame": 1000 * t_est / n_frames,
           "find_ms_per_frame": 1000 * t_find / n_frames,
           "estimator_only_ms_per_frame": 1000 * t_base / n_frames,
           "ratio_vs_estimator_only": t_base / total, "tiles": len(finder.tiles(H, W))}  # fmt: skip
    print(f"speed 768x576, one process: {out['frames_per_s']:.2f} frames/s, {out['persons_per_s']:.2f} "
          f"accepted persons/s; detect {out['detect_ms_per_frame']:.0f} ms/frame ({out['tiles']} tiles), "
          f"estimate {out['estimate_ms_per_frame']:.0f} ms/frame, whole finder (with segmentation "
          f"proposals when on) {out['find_ms_per_frame']:.0f} ms/frame, estimator alone on the detector's crops "
          f"{out['estimator_only_ms_per_frame']:.0f} ms/frame -> {out['ratio_vs_estimator_only']:.2f} of its rate")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/realdev"))
    ap.add_argument("--half", choices=("tune", "check"), default="check")
    ap.add_argument("--scenes", type=int, default=30)
    ap.add_argument("--seeds", default="100,101,102")
    ap.add_argument("--video-frames", type=int, default=60)
    ap.add_argument("--video-seeds", default="200,201,202")
    ap.add_argument("--min-track", type=int, default=3, help="as prepare video --min-track")
    ap.add_argument("--tracker", choices=("own", "supervision"), default="own")
    ap.add_argument("--parts", default="scenes,video,nobody,speed")
    ap.add_argument("--via", choices=("library", "cli", "both"), default="library",
                    help="library: PersonFinder called here; cli: scenes/video written to disk "
                    "and run through `pg2kit prepare folder|video`, figures read from the shards "
                    "and failures.csv; both: cli, plus the library on the same images")  # fmt: skip
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/multiperson_cli"),
        help="cli: where scenes, videos and prepared outputs are written",
    )
    ap.add_argument("--workers", type=int, default=2, help="cli: prepare --workers")
    ap.add_argument("--detect-every", type=int, default=None, metavar="K",
                    help="prepare video --detect-every K (default: the CLI's); library: "
                    "the same segments, detect then follow")  # fmt: skip
    ap.add_argument("--every", type=int, default=None, metavar="N",
                    help="cli: prepare video --every N")  # fmt: skip
    ap.add_argument(
        "--appearance-split",
        type=float,
        default=None,
        metavar="D",
        help="prepare video --appearance-split D (default: the CLI's); library too",
    )
    ap.add_argument(
        "--appearance-join",
        type=float,
        default=None,
        metavar="D",
        help="prepare video --appearance-join D (default: the CLI's); library too",
    )
    ap.add_argument("--follow-views", type=int, default=None, metavar="N",
                    help="prepare video --follow-views N (default: the CLI's); library too")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="FinderConfig override, e.g. --set min_score=0.4 (library only)")  # fmt: skip
    ap.add_argument("--alone-seed", type=int, default=0,
                    help="alone: seed of the backgrounds and places")  # fmt: skip
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()

    from pg2kit.persons import PersonFinder

    opts = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        opts[k] = json.loads(v) if v[:1] in "[{" or v.replace(".", "", 1).isdigit() else v
        if isinstance(opts[k], str) and opts[k] in ("true", "false"):
            opts[k] = opts[k] == "true"
    if opts and args.via != "library":
        ap.error("--set works with --via library only (the CLI uses the defaults)")
    finder = PersonFinder(**opts)
    people = load_people(args.data, args.half)
    print(f"{args.half} half: {len(people)} people "
          f"({sum(p['id'][0] == 'm' for p in people)} Market, {sum(p['id'][0] == 'd' for p in people)} DeepFashion); "
          f"config overrides {opts}; via {args.via}", flush=True)  # fmt: skip
    parts = set(args.parts.split(","))
    result: dict = {"half": args.half, "overrides": opts, "via": args.via}
    t0 = time.perf_counter()
    lib = library_find(finder)
    if args.via == "library":
        find, compare = lib, None
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        find = cli_folder_find(args.workdir, args.workers, [])
        compare = lib if args.via == "both" else None
    if "scenes" in parts:
        result["scenes"] = run_scenes(
            find, people, [int(s) for s in args.seeds.split(",")], args.scenes, compare
        )
    if "video" in parts:
        result["video"] = []
        for s in args.video_seeds.split(","):
            if args.via != "library":
                extra = (
                    [] if args.detect_every is None else ["--detect-every", str(args.detect_every)]
                ) + ([] if args.every is None else ["--every", str(args.every)])
                for flag in ("appearance_split", "appearance_join", "follow_views"):
                    if getattr(args, flag) is not None:
                        extra += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
                result["video"].append(run_video_cli(people, int(s), args.video_frames,
                                                     args.workdir, args.workers, args.min_track,
                                                     extra))  # fmt: skip
            if args.via != "cli":
                # as prepare video: no segmentation proposals unless asked for (--set)
                vfinder = finder if "segment_tiles" in opts else PersonFinder(
                    **{**opts, "segment_tiles": ()})  # fmt: skip
                from pg2kit.prepare import PrepareConfig

                dflt = PrepareConfig("video", Path("."))
                appearance = tuple(
                    dflt_v if v is None else v
                    for v, dflt_v in ((args.appearance_split, dflt.appearance_split),
                                      (args.appearance_join, dflt.appearance_join))
                )  # fmt: skip
                result["video"].append(run_video(vfinder, people, int(s), args.video_frames,
                                                 args.tracker, args.min_track,
                                                 args.detect_every or 1, appearance,
                                                 args.follow_views or dflt.follow_views))  # fmt: skip
    if "nobody-video" in parts:
        args.workdir.mkdir(parents=True, exist_ok=True)
        extra = [] if args.detect_every is None else ["--detect-every", str(args.detect_every)]
        result["nobody_video"] = run_nobody_video(args.data, args.workdir, args.workers,
                                                  extra=extra)  # fmt: skip
    if "nobody" in parts:
        result["nobody"] = run_nobody(find, args.data)
        if compare is not None:
            result["nobody_library"] = run_nobody(compare, args.data)
    if "blobs" in parts:
        result["blobs"] = run_blobs(find)
    if "alone" in parts:
        result["alone"] = run_alone(find, people, args.alone_seed, compare)
    if "speed" in parts:
        result["speed"] = run_speed(finder, people)
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
