"""Human-readable views of a prepared folder: the manifest as a table and a contact sheet PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pg2kit import shards


def manifest_table(manifest: dict[str, Any]) -> str:
    """The manifest as a small text table plus the settings that made it."""
    frame = manifest["frame"]
    kp = manifest.get("keypoints") if isinstance(manifest.get("keypoints"), dict) else {}
    lines = [
        f"dataset     {manifest['dataset']}  (pg2kit {manifest.get('pg2kit_version', '?')}, "
        f"schema {manifest.get('schema_version')})",
        f"source      {manifest.get('source') or '-'}",
        f"frame       {frame['height']}x{frame['width']} (HxW), x offset {frame.get('x_offset', 0)}",
        f"keypoints   {kp.get('source', '?')}  {kp.get('version', '?')}",
    ]
    p = manifest.get("params", {})
    lines.append(
        f"maps/masks  {p.get('map_kind')} maps (r={p.get('map_radius')}, sigma="
        f"{p.get('map_sigma')}), mask r={p.get('mask_radius')}, stored maps: "
        f"{'yes' if p.get('store_maps') else 'no'}"
    )
    pairs = manifest.get("pairs", {})
    header = f"{'split':<8} {'samples':>8} {'no person':>10} {'skipped':>8} {'shards':>7} {'MB':>8}"
    if pairs:
        header += f" {'pairs':>9}"
    lines += ["", header, "-" * len(header)]
    for split, info in manifest["splits"].items():
        mb = sum(s.get("bytes", 0) for s in info["shards"]) / 1e6
        row = (f"{split:<8} {info['count']:>8} {info.get('no_person', 0):>10} "
               f"{info.get('skipped', 0):>8} {len(info['shards']):>7} {mb:>8.1f}")  # fmt: skip
        if pairs:
            row += f" {pairs.get('counts', {}).get(split, '-'):>9}"
        lines.append(row)
    if pairs:
        lines.append(f"pairs: protocol {pairs.get('protocol', '?')}")
    lines.append(f"failures    {manifest.get('failures', 0)} (see failures.csv)")
    return "\n".join(lines)


def contact_sheet(root: Path, out_path: Path, n: int = 12, seed: int = 0, groups: int = 3) -> Path:
    """PNG of `n` sampled records: image | skeleton overlay | pose map | body mask."""
    from pg2kit import maps, viz

    root = Path(root)
    manifest = shards.load_manifest(root)
    rng = np.random.default_rng(seed)
    picks: list[tuple[str, int]] = []
    splits = [s for s, info in manifest["splits"].items() if info["count"]]
    per_split = -(-n // max(1, len(splits)))
    for split in splits:
        count = manifest["splits"][split]["count"]
        ids = rng.choice(count, size=min(per_split, count), replace=False)
        picks += [(split, int(i)) for i in sorted(ids)]
    picks = picks[:n]
    p = manifest.get("params", {})
    cells = []
    readers = {split: shards.SplitReader(root, split) for split in splits}
    for split, i in picks:
        reader = readers[split]
        image = reader.read("image", [i])[0]
        kp = reader.read("keypoints", [i])[0]
        mask = reader.read("mask", [i])[0]
        name = str(reader.read("name", [i])[0])
        ident = str(reader.read("identity", [i])[0])
        label = f"{ident} | {name}" if name and not name.startswith(ident) else name
        h, w = image.shape[:2]
        scale = max(1, 256 // h)  # small Market crops drawn larger so the skeleton is legible
        big = np.repeat(np.repeat(image, scale, 0), scale, 1)
        pose = maps.pose_maps(kp[None], h, w, kind=p.get("map_kind", "disk"),
                              radius=p.get("map_radius", 4), sigma=p.get("map_sigma", 6.0))[0]  # fmt: skip
        cells.append((label, [
            big,
            viz.draw_skeleton(image, kp, scale=scale),
            viz.colorize_pose_map(pose),
            viz.overlay_mask(image, mask, 0.5),
        ]))  # fmt: skip
    for reader in readers.values():
        reader.close()
    rows = []
    for start in range(0, len(cells), groups):
        row = []
        for name, imgs in cells[start : start + groups]:
            row += [_caption(imgs[0], name), *imgs[1:]]
        rows.append(row)
    col_labels = ["image", "skeleton", "pose map", "mask"] * min(groups, len(cells))
    sheet = viz.grid(rows, col_labels=col_labels)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    viz.save_png(out_path, sheet)
    return out_path


def _shorten(text: str, width_px: int, scale: float) -> str:
    """`text` cut in the middle ('abc...xyz') so that it fits `width_px` at font `scale`."""
    import cv2

    def fits(t: str) -> bool:
        return cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width_px - 4

    if fits(text):
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        t = text[: keep // 2] + ".." + text[len(text) - (keep - keep // 2) :]
        if fits(t):
            return t
    return text[:4]


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """`image` with `text` written small on a dark strip along its bottom edge (two lines when
    the text is 'identity | name' and does not fit one)."""
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    scale = 0.35 if w >= 96 else 0.3
    lines = [text]
    if " | " in text and _shorten(text, w, scale) != text:
        lines = text.split(" | ", 1)
    lines = [_shorten(t, w, scale) for t in lines]
    band = 12 * len(lines) + 2
    out[h - band :] = (out[h - band :] * 0.3).astype(np.uint8)
    for k, t in enumerate(lines):
        y = h - band + 11 + 12 * k
        cv2.putText(out, t, (2, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
    return out


def has_tracks(root: Path, manifest: dict[str, Any]) -> bool:
    """Whether any sample of the folder belongs to a video track (`track` >= 0)."""
    return any(
        info["count"]
        and shards.split_has_field(root, split, "track")
        and (shards.read_split_fields(root, split, ["track"])["track"] >= 0).any()
        for split, info in manifest["splits"].items()
    )


def track_sheet(root: Path, out_path: Path, max_tracks: int = 40, per_track: int = 10) -> Path:
    """PNG with one row per track (video identity): its crops over time, skeletons drawn, the
    frame index under each, so that one can see at a glance whether a track is one person.

    Tracks are the identities of samples with `track` >= 0; at most `max_tracks` rows (the
    longest tracks) and `per_track` crops per row, spread evenly over the track's frames.
    """
    from pg2kit import viz

    root = Path(root)
    manifest = shards.load_manifest(root)
    rows_info = []  # (identity, split, sample ids sorted by frame)
    for split, info in manifest["splits"].items():
        if not info["count"]:
            continue
        f = shards.read_split_fields(root, split, ["identity", "track", "frame"])
        tracked = f["track"] >= 0
        for ident in sorted(set(f["identity"][tracked].tolist())):
            ids = np.nonzero((f["identity"] == ident) & tracked)[0]
            ids = ids[np.argsort(f["frame"][ids], kind="stable")]
            rows_info.append((ident, split, ids, f["frame"][ids]))
    if not rows_info:
        raise ValueError(f"{root}: no tracked samples (track >= 0) to draw")
    rows_info.sort(key=lambda r: -len(r[2]))
    rows_info = sorted(rows_info[:max_tracks], key=lambda r: r[0])
    readers: dict[str, shards.SplitReader] = {}
    rows, labels = [], []
    for ident, split, ids, frames in rows_info:
        reader = readers.setdefault(split, shards.SplitReader(root, split))
        pick = np.unique(np.linspace(0, len(ids) - 1, min(per_track, len(ids))).round().astype(int))
        images = reader.read("image", ids[pick])
        kps = reader.read("keypoints", ids[pick])
        h = images.shape[1]
        scale = max(1, 128 // h)
        row = []
        for im, kp, fr in zip(images, kps, frames[pick], strict=True):
            row.append(_caption(viz.draw_skeleton(im, kp, scale=scale), f"f{int(fr)}"))
        rows.append(row)
        labels.append(f"{ident} ({len(ids)})")
    for reader in readers.values():
        reader.close()
    sheet = viz.grid(rows, labels=labels)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    viz.save_png(out_path, sheet)
    return out_path
