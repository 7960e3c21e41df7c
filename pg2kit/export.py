"""Export a prepared folder to the Def-GAN/PATN exchange files (annotation and pairs CSVs, images)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pg2kit import shards


def export_defgan(
    root: Path,
    out_dir: Path,
    images: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> list[Path]:
    """Write `<prefix>-annotation-<split>.csv` (and `-pairs-` where pairs exist) for each split.

    Keypoints are written as integer pixels of the stored frame (rounded); names keep their
    original extension. With `images`, every image goes to `out_dir/<split>/<name>`.
    """
    from pg2kit.formats import write_defgan_annotations, write_pairs_csv

    root, out_dir = Path(root), Path(out_dir)
    manifest = shards.load_manifest(root)
    prefix = manifest.get("csv_prefix") or manifest["dataset"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in manifest["splits"]:
        fields = shards.read_split_fields(root, split, ["name", "keypoints"])
        names = [str(n) for n in fields["name"]]
        path = out_dir / f"{prefix}-annotation-{split}.csv"
        write_defgan_annotations(path, names, fields["keypoints"])
        written.append(path)
        log(f"{path}: {len(names)} rows")
        pairs = _pairs(root, manifest, split)
        if pairs is not None:
            path = out_dir / f"{prefix}-pairs-{split}.csv"
            write_pairs_csv(path, [(names[a], names[b]) for a, b in pairs])
            written.append(path)
            log(f"{path}: {len(pairs)} pairs")
        if images:
            _write_images(root, split, names, out_dir / split, progress)
            log(f"{out_dir / split}: {len(names)} images")
    return written


def _pairs(root: Path, manifest: dict, split: str) -> np.ndarray | None:
    if not (root / shards.PAIRS).exists():
        return None
    from pg2kit.pairs import read_pair_index

    try:
        return read_pair_index(root, split)
    except KeyError:
        return None


def _write_images(root: Path, split: str, names: list[str], folder: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    from pg2kit.imageio import save_image

    folder.mkdir(parents=True, exist_ok=True)
    reader = shards.SplitReader(root, split)
    step = 256
    with tqdm(total=len(names), unit="img", desc=f"images {split}", disable=not progress) as bar:
        for start in range(0, len(names), step):
            batch = reader.read("image", np.arange(start, min(start + step, len(names))))
            for name, image in zip(names[start : start + step], batch, strict=True):
                save_image(folder / name, image)
            bar.update(len(batch))
    reader.close()
