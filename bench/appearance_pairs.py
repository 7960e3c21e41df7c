"""How far apart `pg2kit.tracking.appearance` puts real people: every pair of the real Market-1501
crops in ../shared/data/realdev (keypoints from its annotations.csv), grouped as the same identity
seen by the same camera, the same identity by another camera, and different identities.

`prepare video` cuts a track at a distance above --appearance-split (0.35) and joins two tracks at
or below --appearance-join (0.2); these pairs say how often two different people fall under
either threshold (a swap that is not cut, a join of two people if they were also close in time
and place) and how often one person's frames of one camera fall above the split threshold.

    python bench/appearance_pairs.py [--data ../shared/data/realdev]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from pg2kit.tracking import appearance, appearance_distance


def load(data: Path) -> list[tuple[str, str, np.ndarray]]:
    """(identity, camera, descriptor) of every Market crop with annotated keypoints."""
    kp = {}
    for line in (data / "annotations.csv").read_text().splitlines()[1:]:
        name, ys, xs = line.split(":")
        pts = [[x, y] if x >= 0 and y >= 0 else [-1, -1]
               for x, y in zip(json.loads(xs), json.loads(ys), strict=True)]  # fmt: skip
        kp[name.rsplit(".", 1)[0]] = np.array(pts, np.float32)
    out = []
    for f in sorted((data / "Market1501").glob("*.png")):
        if f.stem in kp:
            img = cv2.imread(str(f))[:, :, ::-1]
            identity, camera = f.stem.split("_")[0], f.stem.split("_")[1][:2]
            out.append((identity, camera, appearance(img, kp[f.stem])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/realdev"))
    ap.add_argument("--split", type=float, default=0.35)
    ap.add_argument("--join", type=float, default=0.2)
    args = ap.parse_args()
    items = load(args.data)
    groups: dict[str, list[float]] = {"same identity, same camera": [],
                                      "same identity, other camera": [], "different identities": []}  # fmt: skip
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            d = appearance_distance(items[i][2], items[j][2])
            if items[i][0] != items[j][0]:
                groups["different identities"].append(d)
            elif items[i][1] == items[j][1]:
                groups["same identity, same camera"].append(d)
            else:
                groups["same identity, other camera"].append(d)
    print(f"{len(items)} Market crops, {len({x[0] for x in items})} identities")
    for name, v in groups.items():
        v = np.array(v)
        print(f"{name}: {len(v)} pairs, median {np.median(v):.3f}, "
              f"> split {args.split}: {(v > args.split).mean():.3f}, "
              f"<= join {args.join}: {(v <= args.join).mean():.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
