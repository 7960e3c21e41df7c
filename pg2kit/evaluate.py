"""Score a folder of generated images against the real targets, every number with its convention.

Reads DIR/<from>___<to>.png (or the last panel of <from>___<to>_vis.png strips) and the real
images and keypoints (a prepared folder, or a folder of images + a Def-GAN annotation CSV);
writes metrics.json, metrics.md and per_pair.csv. Files and conventions: docs/evaluation.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pg2kit.generate import INFO_FILE, parse_pair_file_name

__all__ = [
    "EvalConfig",
    "EvaluateError",
    "evaluate",
    "find_generated",
    "pose_accuracy",
]

MASK_KINDS = ("pg2", "defgan")
PAD_WIDTH = 256  # PATN's DeepFashion convention: 176-wide images padded white to 256


class EvaluateError(ValueError):
    """Evaluation cannot run; the message (one line) names the file and the problem."""


@dataclass
class EvalConfig:
    real: str  # prepared folder, or a folder of real images (then `annotations`)
    split: str | None = None  # prepared folder split; None: generate.json's, else "test"
    annotations: str | None = None  # Def-GAN CSV for a folder of real images
    mask_from: str = "target"  # target (correct) | source (PG2's published figures)
    mask_kind: str = "pg2"  # pg2: PG2 body mask r4 (SPEC 3) | defgan: Def-GAN/PATN eval mask
    pad_to_256: bool = False
    inception_weights: str | None = None
    lpips_weights: str | None = None
    alexnet_weights: str | None = None
    lpips_version: str = "0.1"
    fid_reference: str | None = None  # None: the train split of a prepared --real; or a folder
    is_splits: int = 10
    pose: bool = True
    limit: int | None = None
    batch_size: int = 64
    device: str = "auto"
    progress: bool = True
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- inputs


def find_generated(gen_dir: Path) -> list[tuple[str, str, Path, bool]]:
    """(from, to, file, is_strip) per pair, sorted by file name: plain files win over strips."""
    found: dict[tuple[str, str], tuple[Path, bool]] = {}
    for p in sorted(Path(gen_dir).iterdir()):
        parsed = parse_pair_file_name(p.name)
        if parsed is None:
            continue
        src, tgt, kind = parsed
        if kind == "":
            found[(src, tgt)] = (p, False)
        elif kind == "vis" and (src, tgt) not in found:
            found[(src, tgt)] = (p, True)
    return [(a, b, p, strip) for (a, b), (p, strip) in sorted(found.items())]


def _load_generated(path: Path, strip: bool, size: tuple[int, int]) -> np.ndarray:
    from pg2kit.imageio import load_rgb

    img = load_rgb(path)
    h, w = size
    if strip:
        if img.shape[1] % 5 or img.shape[1] // 5 != w:
            raise EvaluateError(f"{path}: a strip of width {img.shape[1]}, expected 5 x {w}")
        img = img[:, 4 * w :]
    if img.shape[:2] != (h, w):
        raise EvaluateError(f"{path}: {img.shape[0]}x{img.shape[1]}, the real images are {h}x{w}")
    return img


class _Real:
    """Real images and keypoints by name: a prepared folder split, or images + annotations."""

    def __init__(self, cfg: EvalConfig, split: str):
        root = Path(cfg.real)
        self.root = root
        self.prepared = (root / "manifest.json").exists()
        self.keypoints: dict[str, np.ndarray] = {}
        if self.prepared:
            from pg2kit import shards

            fields = shards.read_split_fields(root, split, ["name", "keypoints"])
            self.reader = shards.SplitReader(root, split)
            names = [str(n) for n in fields["name"]]
            self.ids = {n: i for i, n in enumerate(names)}
            self.stems = {Path(n).stem: i for i, n in enumerate(names)}
            self.kp_all = fields["keypoints"].astype(np.float32)
            self.size = tuple(self.reader.read("image", [0]).shape[1:3])
        else:
            if not root.is_dir():
                raise EvaluateError(f"{root}: neither a prepared folder nor a folder of images")
            from pg2kit.imageio import is_image_file

            self.files = {p.name: p for p in sorted(root.iterdir()) if is_image_file(p)}
            self.file_stems = {Path(n).stem: p for n, p in self.files.items()}
            if not self.files:
                raise EvaluateError(f"{root}: no images")
            self.size = None
            if cfg.annotations:
                from pg2kit.formats import read_defgan_annotations

                table = read_defgan_annotations(cfg.annotations)
                for n, k in zip(table.names, table.keypoints, strict=True):
                    self.keypoints[Path(str(n)).stem] = np.asarray(k, np.float32)

    def _id(self, name: str) -> int:
        i = self.ids.get(name, self.stems.get(Path(name).stem))
        if i is None:
            raise EvaluateError(f"{self.root}: no image named {name!r} in the split")
        return i

    def images(self, names: list[str]) -> np.ndarray:
        if self.prepared:
            return self.reader.read("image", [self._id(n) for n in names])
        from pg2kit.imageio import load_rgb

        out = []
        for n in names:
            p = self.files.get(n) or self.file_stems.get(Path(n).stem)
            if p is None:
                raise EvaluateError(f"{self.root}: no image named {n!r}")
            out.append(load_rgb(p))
        return np.stack(out)

    def kp(self, names: list[str]) -> np.ndarray | None:
        if self.prepared:
            return self.kp_all[[self._id(n) for n in names]]
        if not self.keypoints:
            return None
        missing = [n for n in names if Path(n).stem not in self.keypoints]
        if missing:
            raise EvaluateError(f"no row for {missing[0]!r} in the annotations")
        return np.stack([self.keypoints[Path(n).stem] for n in names])


def _masks(kp: np.ndarray, h: int, w: int, kind: str) -> np.ndarray:
    from pg2kit.maps import body_masks, eval_masks

    if kind == "pg2":
        return body_masks(kp, h, w, radius=4)
    return eval_masks(kp, h, w)


def _pad(images: np.ndarray, value: int) -> np.ndarray:
    """Pad (N, H, W[, 3]) to width 256 with `value`, centred (PATN: 40 px each side for 176)."""
    w = images.shape[2]
    if w >= PAD_WIDTH:
        return images
    left = (PAD_WIDTH - w) // 2
    pad = [(0, 0), (0, 0), (left, PAD_WIDTH - w - left)] + [(0, 0)] * (images.ndim - 3)
    return np.pad(images, pad, constant_values=value)


# ---------------------------------------------------------------- pose accuracy


def pose_accuracy(pred: np.ndarray, ref: np.ndarray, height: int) -> dict[str, float]:
    """PCKh@0.5, PCK@0.1H and detection rates of keypoints (N, 18, 2) found on generated images
    (`pred`) against those found on the real targets (`ref`), missing = -1.

    A keypoint counts where both sets have it. PCKh: right within 0.5 x the head size (the
    larger side of the box around the reference's head keypoints 0, 14-17; images whose
    reference has fewer than two head keypoints are left out). PCK@0.1H: within 0.1 x the image
    height. Detection: share of images with any keypoint.
    """
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    pok = (pred >= 0).all(-1)
    rok = (ref >= 0).all(-1)
    both = pok & rok
    d = np.linalg.norm(pred - ref, axis=-1)
    head = [0, 14, 15, 16, 17]
    hs = np.full(len(ref), np.nan)
    for i in range(len(ref)):
        pts = ref[i, head][rok[i, head]]
        if len(pts) >= 2:
            hs[i] = max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]))
    hv = np.isfinite(hs) & (hs > 0)
    sel = both & hv[:, None]
    pckh = (
        float((d[sel] <= 0.5 * np.broadcast_to(hs[:, None], d.shape)[sel]).mean())
        if sel.any()
        else math.nan
    )
    pck = float((d[both] <= 0.1 * height).mean()) if both.any() else math.nan
    return {
        "pckh": pckh,
        "pck_0.1h": pck,
        "keypoints_compared": int(both.sum()),
        "detection_rate_generated": float(pok.any(1).mean()) if len(pred) else math.nan,
        "detection_rate_real": float(rok.any(1).mean()) if len(ref) else math.nan,
    }


# ---------------------------------------------------------------- the run


def _weights_note(kind: str, e: Exception) -> str:
    return f"{kind} skipped: {e}"


def _fid_reference_images(cfg: EvalConfig, real: _Real, limit: int | None):
    """Yields uint8 batches of the FID reference set; and its description."""
    if cfg.fid_reference is None or cfg.fid_reference in ("train", "test"):
        split = cfg.fid_reference or "train"
        if not real.prepared:
            raise EvaluateError(
                "FID needs --fid-reference FOLDER when --real is not a prepared folder"
            )
        from pg2kit import shards

        reader = shards.SplitReader(real.root, split)
        n = len(reader) if limit is None else min(limit, len(reader))

        def batches(bs):
            for s in range(0, n, bs):
                yield reader.read("image", np.arange(s, min(n, s + bs)))

        return batches, n, f"{real.root} split {split} ({n} images)"
    folder = Path(cfg.fid_reference)
    from pg2kit.imageio import is_image_file, load_rgb

    files = sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []
    if not files:
        raise EvaluateError(f"{folder}: no reference images for FID")
    files = files[:limit] if limit else files

    def batches(bs):
        for s in range(0, len(files), bs):
            yield np.stack([load_rgb(p) for p in files[s : s + bs]])

    return batches, len(files), f"{folder} ({len(files)} images)"


def evaluate(gen_dir: str | Path, cfg: EvalConfig) -> dict[str, Any]:
    """Compute every metric that can be computed; returns the metrics.json content."""
    import torch
    from tqdm import tqdm

    from pg2kit import metrics as M

    gen_dir = Path(gen_dir)
    if not gen_dir.is_dir():
        raise EvaluateError(f"{gen_dir}: not a folder")
    if cfg.mask_from not in ("target", "source"):
        raise EvaluateError(f"mask source must be target or source, not {cfg.mask_from!r}")
    if cfg.mask_kind not in MASK_KINDS:
        raise EvaluateError(f"mask kind must be one of {MASK_KINDS}, not {cfg.mask_kind!r}")
    info = {}
    if (gen_dir / INFO_FILE).exists():
        info = json.loads((gen_dir / INFO_FILE).read_text(encoding="utf-8"))
    split = cfg.split or info.get("split") or "test"
    items = find_generated(gen_dir)
    if cfg.limit:
        items = items[: cfg.limit]
    if not items:
        raise EvaluateError(f"{gen_dir}: no <from>___<to>.png or _vis.png files")
    real = _Real(cfg, split)
    first = real.images([items[0][1]])[0]
    h, w = first.shape[:2]
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    notes = list(cfg.notes)
    t0 = time.perf_counter()

    # optional networks: a missing file is a note, the other metrics go on
    inception = lpips_net = None
    if cfg.inception_weights:
        from pg2kit.nets import WeightsError
        from pg2kit.nets.inception import load_inception

        try:
            inception = load_inception(cfg.inception_weights, device)
        except WeightsError as e:
            notes.append(_weights_note("IS, mask-IS, FID", e))
    else:
        notes.append("IS, mask-IS, FID skipped: no --inception-weights given")
    if cfg.lpips_weights:
        from pg2kit.nets import WeightsError
        from pg2kit.nets.lpips import load_lpips

        try:
            lpips_net = load_lpips(
                cfg.lpips_weights, cfg.alexnet_weights, cfg.lpips_version, device
            )
        except WeightsError as e:
            notes.append(_weights_note("LPIPS", e))
    else:
        notes.append("LPIPS skipped: no --lpips-weights given")
    estimator = None
    if cfg.pose:
        try:
            from pg2kit.estimators import make_estimator

            estimator = make_estimator("mediapipe")
        except ImportError as e:  # mediapipe not installed
            notes.append(f"pose accuracy skipped: {e}")

    per = {
        k: [] for k in ("ssim_pg2", "ssim_patn", "mask_ssim_pg2", "mask_ssim_patn", "l1", "psnr")
    }
    per_lpips: list[np.ndarray] = []
    logits, mask_logits, feats = [], [], []
    pose_pred, pose_ref = [], []
    have_masks = True

    def net_batches(x: np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        for s in range(0, len(t), 32):
            yield t[s : s + 32].to(device)

    bar = tqdm(total=len(items), unit="pair", desc="evaluate", disable=not cfg.progress)
    for s in range(0, len(items), cfg.batch_size):
        chunk = items[s : s + cfg.batch_size]
        gen = np.stack([_load_generated(p, strip, (h, w)) for _, _, p, strip in chunk])
        tgt_names = [b for _, b, _, _ in chunk]
        src_names = [a for a, _, _, _ in chunk]
        target = real.images(tgt_names)
        mask_kp = real.kp(tgt_names if cfg.mask_from == "target" else src_names)
        if mask_kp is None:
            have_masks = False
            mask = np.ones((len(chunk), h, w), np.uint8)
        else:
            mask = _masks(mask_kp, h, w, cfg.mask_kind)
        g_img, t_img, m_img = gen, target, mask
        if cfg.pad_to_256:
            g_img, t_img, m_img = _pad(gen, 255), _pad(target, 255), _pad(mask, 0)
        plain = M.ssim_batch_multi(g_img, t_img)
        masked = M.ssim_batch_multi(M.apply_mask(g_img, m_img), M.apply_mask(t_img, m_img))
        for v in M.SSIM_VARIANTS:
            per[f"ssim_{v}"].append(plain[v])
            per[f"mask_ssim_{v}"].append(masked[v])
        per["l1"].append(M.l1_batch(g_img, t_img))
        per["psnr"].append(M.psnr_batch(g_img, t_img))
        with torch.inference_mode():
            if inception is not None:
                for x in net_batches(g_img):
                    pool, lg = inception(x)
                    feats.append(pool.double().cpu().numpy())
                    logits.append(lg.double().cpu().numpy())
                for x in net_batches(M.apply_mask(g_img, m_img)):
                    mask_logits.append(inception(x)[1].double().cpu().numpy())
            if lpips_net is not None:
                for x, y in zip(net_batches(g_img), net_batches(t_img), strict=True):
                    per_lpips.append(lpips_net(x, y).cpu().numpy())
        if estimator is not None:
            for gi, ti in zip(gen, target, strict=True):
                pose_pred.append(estimator(gi)[0])
                pose_ref.append(estimator(ti)[0])
        bar.update(len(chunk))
    bar.close()
    if estimator is not None:
        estimator.close()

    per_arr = {k: np.concatenate(v) for k, v in per.items()}
    n = len(items)
    mask_desc = (
        f"{'PG2 body mask r4' if cfg.mask_kind == 'pg2' else 'Def-GAN/PATN evaluation mask'} "
        f"of the {cfg.mask_from.upper()} keypoints"
    )
    if not have_masks:
        notes.append("mask metrics skipped: no keypoints for the real images (--annotations)")
    pad_note = " on images padded white to 256 wide (PATN; inflates SSIM)" if cfg.pad_to_256 else ""
    result: dict[str, Any] = {
        "pairs": n,
        "generated": str(gen_dir),
        "real": str(real.root),
        "split": split if real.prepared else None,
        "image_size": [h, w],
        "padded_to_256": cfg.pad_to_256,
        "generate_info": info or None,
        "metrics": {},
        "notes": notes,
    }
    out = result["metrics"]

    def put(key, value, convention, **extra):
        value = value if value is None or math.isfinite(value) else None  # JSON has no inf/NaN
        out[key] = {"value": value, "convention": convention + pad_note, **extra}

    put("ssim_pg2", float(per_arr["ssim_pg2"].mean()),
        "SSIM, scikit-image 2017 defaults on uint8 (7x7 uniform, data range 255, sample "
        "covariance), mean over pairs: PG2 / Def-GAN")  # fmt: skip
    put("ssim_patn", float(per_arr["ssim_patn"].mean()),
        "SSIM, Gaussian sigma 1.5, population covariance, data range of the generated image: "
        "PATN / GFLA and later")  # fmt: skip
    if have_masks:
        put("mask_ssim_pg2", float(per_arr["mask_ssim_pg2"].mean()),
            f"mask-SSIM (pg2 SSIM) of both images times the {mask_desc}")  # fmt: skip
        put("mask_ssim_patn", float(per_arr["mask_ssim_patn"].mean()),
            f"mask-SSIM (patn SSIM) of both images times the {mask_desc}")  # fmt: skip
    put("l1", float(per_arr["l1"].mean()), "mean |generated - real| in [0, 1]")
    finite = per_arr["psnr"][np.isfinite(per_arr["psnr"])]
    put("psnr", float(finite.mean()) if len(finite) else math.inf,
        "PSNR dB, data range 255, mean over pairs (identical pairs left out)")  # fmt: skip
    if inception is not None:
        lg = np.concatenate(logits)
        if len(lg) >= cfg.is_splits:
            m, sd = M.inception_score(lg, cfg.is_splits)
            put("is", m, f"IS, TF Inception 2015-12-05 port, 1008 logits w/o bias, "
                f"{cfg.is_splits} splits", std=sd)  # fmt: skip
            m, sd = M.inception_score(np.concatenate(mask_logits), cfg.is_splits)
            put("mask_is", m, f"IS of generated images times the {mask_desc}", std=sd)
        else:
            notes.append(f"IS skipped: {len(lg)} images, fewer than {cfg.is_splits} splits")
        try:
            ref_fn, ref_n, ref_desc = _fid_reference_images(cfg, real, None)
            mu_r, s_r = _reference_stats(cfg, inception, ref_fn, ref_n, ref_desc, gen_dir, device)
            mu_g, s_g = M.feature_stats(np.concatenate(feats))
            put("fid", M.frechet_distance(mu_g, s_g, mu_r, s_r),
                f"FID, 2048-d pool features of the same Inception, against {ref_desc}")  # fmt: skip
        except EvaluateError as e:
            notes.append(f"FID skipped: {e}")
    if lpips_net is not None:
        put("lpips", float(np.concatenate(per_lpips).mean()),
            f"LPIPS AlexNet + linear heads v{cfg.lpips_version}, generated vs real target")  # fmt: skip
    if estimator is not None:
        acc = pose_accuracy(np.stack(pose_pred), np.stack(pose_ref), h)
        conv = "MediaPipe (bundled) on generated and on real targets"
        put("pckh", acc["pckh"], f"PCKh@0.5 (head size of the real target), {conv}")
        put("pck_0.1h", acc["pck_0.1h"], f"PCK@0.1 x image height, {conv}")
        put("detection_rate", acc["detection_rate_generated"],
            f"share of generated images where MediaPipe (bundled) finds a person; on the "
            f"real targets {acc['detection_rate_real']:.3f}",
            real=acc["detection_rate_real"], keypoints_compared=acc["keypoints_compared"])  # fmt: skip
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["per_pair"] = {
        "names": [[a, b] for a, b, _, _ in items],
        **{k: v.tolist() for k, v in per_arr.items()},
        **({"lpips": np.concatenate(per_lpips).tolist()} if per_lpips else {}),
    }
    return result


def _reference_stats(cfg, inception, ref_fn, n, desc, gen_dir: Path, device):
    """FID reference statistics, cached in DIR/fid_reference-<key>.npz (weights, set, size)."""
    import torch

    from pg2kit import metrics as M

    wpath = Path(cfg.inception_weights)
    key = hashlib.sha1(
        json.dumps([desc, str(wpath.resolve()), wpath.stat().st_size]).encode()
    ).hexdigest()[:12]
    cache = gen_dir / f"fid_reference-{key}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["mu"], z["sigma"]
    from tqdm import tqdm

    feats = []
    with torch.inference_mode():
        bar = tqdm(total=n, unit="img", desc="FID reference", disable=not cfg.progress)
        for batch in ref_fn(32):
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(device)
            feats.append(inception(x)[0].double().cpu().numpy())
            bar.update(len(batch))
        bar.close()
    mu, sigma = M.feature_stats(np.concatenate(feats))
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma)
    from pg2kit.atomic import write_bytes

    write_bytes(cache, buf.getvalue())
    return mu, sigma


# ---------------------------------------------------------------- reports


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics as a markdown table, one row per number with its convention."""
    lines = [
        f"# Evaluation of {result['generated']}",
        "",
        f"{result['pairs']} pairs, real images from {result['real']}"
        + (f" (split {result['split']})" if result.get("split") else "")
        + f", {result['image_size'][0]}x{result['image_size'][1]}"
        + (", **padded to 256 wide (inflates SSIM)**" if result["padded_to_256"] else ""),
        "",
        "| metric | value | convention |",
        "|---|---|---|",
    ]
    for k, m in result["metrics"].items():
        v = m["value"]
        text = f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)
        if "std" in m:
            text += f" ± {m['std']:.4f}"
        conv = m["convention"].replace("|", "\\|")  # a literal | would end the cell
        lines.append(f"| {k} | {text} | {conv} |")
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def per_pair_csv(result: dict[str, Any]) -> str:
    pp = result["per_pair"]
    keys = [k for k in pp if k != "names"]
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["from", "to", *keys])
    for i, (a, b) in enumerate(pp["names"]):
        wr.writerow([a, b, *(f"{pp[k][i]:.6f}" for k in keys)])
    return buf.getvalue()


def write_reports(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """metrics.json (without the per-pair arrays), metrics.md, per_pair.csv, atomically."""
    from pg2kit.atomic import write_text

    out = Path(out_dir)
    slim = {k: v for k, v in result.items() if k != "per_pair"}
    paths = [out / "metrics.json", out / "metrics.md", out / "per_pair.csv"]
    write_text(paths[0], json.dumps(slim, indent=2) + "\n")
    write_text(paths[1], markdown_table(result))
    write_text(paths[2], per_pair_csv(result))
    return paths
