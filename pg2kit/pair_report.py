"""Pictures of a prepared folder's pairs: reads pairs.h5 and the shards, writes PNGs
(pairs per identity, pose-difference histogram, a sheet of sample pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pg2kit.keypoints import OPENPOSE_COLORS, SKELETON_LIMBS, present
from pg2kit.pairs import group_codes, pose_difference, read_pair_index


def _histogram(path: Path, values: np.ndarray, title: str, xlabel: str, bins: int = 50) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if len(values):
        ax.hist(values, bins=bins, color="#3b75af")
    else:
        ax.text(0.5, 0.5, "no pairs", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _draw_skeleton_cv2(image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """OpenPose-style skeleton drawn onto a copy of an RGB uint8 image (fallback without viz)."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    vis = present(keypoints)
    pts = np.round(keypoints).astype(int)
    for k, (a, b) in enumerate(SKELETON_LIMBS):
        if vis[a] and vis[b]:
            cv2.line(out, tuple(pts[a]), tuple(pts[b]), OPENPOSE_COLORS[k % 18], 2, cv2.LINE_AA)
    for k in np.flatnonzero(vis):
        cv2.circle(out, tuple(pts[k]), 2, OPENPOSE_COLORS[k], -1, cv2.LINE_AA)
    return out


def _sheet_cv2(rows: list[list[np.ndarray]], path: Path) -> Path:
    import cv2

    sheet = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    tmp.replace(path)
    return path


def pair_report(
    root: str | Path, out_dir: str | Path, split: str = "train", n_samples: int = 8, seed: int = 0
) -> list[Path]:
    """Write pairs-per-identity and pose-difference histograms and a sample-pair sheet of
    `split` into out_dir; returns the written PNG paths.

    Pose difference as in pg2kit.pairs.pose_difference (mean shared-keypoint distance / height).
    Sheet rows: source image, target image, target skeleton on black.
    """
    from pg2kit.shards import SplitReader, read_split_fields, shard_attrs

    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = read_pair_index(root, split)
    fields = read_split_fields(root, split, ["identity", "keypoints"])
    height = float(shard_attrs(root, split).get("frame_height", 1.0))
    written = []

    # pairs per identity: identities that have at least one pair, counted by the source image
    if len(pairs):
        per_id = np.bincount(group_codes(fields["identity"])[pairs[:, 0]])
        per_id = per_id[per_id > 0]
    else:
        per_id = np.zeros(0, np.int64)
    written.append(
        _histogram(
            out_dir / f"pairs_per_identity_{split}.png",
            per_id,
            f"{split}: {len(pairs)} pairs over {len(per_id)} identities",
            "pairs per identity",
        )
    )
    diff = pose_difference(fields["keypoints"], pairs, height) if len(pairs) else np.zeros(0)
    diff = diff[np.isfinite(diff)]
    med = f", median {np.median(diff):.3f}" if len(diff) else ""
    written.append(
        _histogram(
            out_dir / f"pose_difference_{split}.png",
            diff,
            f"{split}: pose difference{med}",
            "mean distance of shared keypoints / image height",
        )
    )

    if len(pairs) and n_samples > 0:
        rng = np.random.default_rng(seed)
        chosen = pairs[np.sort(rng.choice(len(pairs), min(n_samples, len(pairs)), replace=False))]
        reader = SplitReader(root, split)
        try:
            src = reader.read("image", chosen[:, 0])
            tgt = reader.read("image", chosen[:, 1])
        finally:
            reader.close()
        tgt_kp = fields["keypoints"][chosen[:, 1]]
        path = out_dir / f"pair_samples_{split}.png"
        try:
            from pg2kit import viz
        except ImportError:
            viz = None
        if viz is not None:
            rows = [
                [s, t, viz.draw_skeleton(np.zeros_like(t), k)]
                for s, t, k in zip(src, tgt, tgt_kp, strict=True)
            ]
            viz.save_png(path, viz.grid(rows, labels=["source", "target", "target pose"]))
            written.append(path)
        else:
            rows = [
                [s, t, _draw_skeleton_cv2(np.zeros_like(t), k)]
                for s, t, k in zip(src, tgt, tgt_kp, strict=True)
            ]
            written.append(_sheet_cv2(rows, path))
    return written
