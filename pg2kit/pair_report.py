"""Pictures of a prepared folder's pairs: reads pairs.h5 and the shards through pg2kit.shards,
writes PNGs (pairs per identity, pose-difference histogram, a sheet of sample pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def pair_report(
    root: str | Path, out_dir: str | Path, split: str = "train", n_samples: int = 8, seed: int = 0
) -> list[Path]:
    """Write pairs-per-identity and pose-difference histograms and a sample-pair sheet of
    `split` into out_dir; returns the written PNG paths.

    Pose difference as in pg2kit.pairs.pose_difference (mean shared-keypoint distance / height).
    Sheet rows: source image, target image, target skeleton on black. A split that pairs.h5
    does not hold gives no pictures (an empty list).
    """
    from pg2kit.shards import PairsMissingError, SplitReader, read_split_fields, shard_attrs

    root, out_dir = Path(root), Path(out_dir)
    try:
        pairs = read_pair_index(root, split)  # without pairs.h5: a PreparedError that says why
    except PairsMissingError:
        return []  # e.g. a folder without this split: nothing to picture
    out_dir.mkdir(parents=True, exist_ok=True)
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
        from pg2kit import viz

        rows = [
            [s, t, viz.draw_skeleton(np.zeros_like(t), k)]
            for s, t, k in zip(src, tgt, tgt_kp, strict=True)
        ]
        sheet = viz.grid(rows, col_labels=["source", "target", "pose"])
        written.append(viz.save_png(out_dir / f"pair_samples_{split}.png", sheet))
    return written
