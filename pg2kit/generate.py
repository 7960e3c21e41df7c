"""Run a trained PG2 model (G1, then G2) on explicit pairs or on one photo and a new pose.

Reads a run folder or checkpoint and a prepared folder (shards through pg2kit.shards); writes
PNGs named `<from>___<to>.png` (+ `_vis.png` 5-panel strips, `_coarse.png` G1 outputs) and
`generate.json` (what was run, with which conventions). Layouts: docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "QUANTISE",
    "GenerateError",
    "Generator",
    "generate_pairs",
    "generate_one",
    "load_generator",
    "pair_file_name",
    "parse_pair_file_name",
    "to_uint8",
]

QUANTISE = ("round", "truncate")
SEP = "___"  # between source and target names, as the Def-GAN/PATN scripts write them
INFO_FILE = "generate.json"


class GenerateError(ValueError):
    """Generation cannot run; the message (one line) names the file and the problem."""


def pair_file_name(source: str, target: str, suffix: str = "") -> str:
    """`<from>___<to><suffix>.png` with the names as stored (extension included)."""
    return f"{source}{SEP}{target}{suffix}.png"


def parse_pair_file_name(name: str) -> tuple[str, str, str] | None:
    """(from, to, kind) of a generated file name, kind '' | 'vis' | 'coarse'; None if not one."""
    if not name.endswith(".png") or SEP not in name:
        return None
    stem = name[:-4]
    kind = ""
    for k in ("vis", "coarse"):
        if stem.endswith("_" + k):
            stem, kind = stem[: -len(k) - 1], k
            break
    src, _, tgt = stem.partition(SEP)
    if not src or not tgt:
        return None
    return src, tgt, kind


def to_uint8(x: torch.Tensor, quantise: str = "round") -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3): clip, scale by 127.5 after +1, then round
    to nearest (`round`) or towards zero (`truncate`, what PG2's test script did)."""
    if quantise not in QUANTISE:
        raise GenerateError(f"quantise must be one of {', '.join(QUANTISE)}, not {quantise!r}")
    v = (x.detach().float().clamp(-1, 1) + 1) * 127.5
    v = v.round() if quantise == "round" else v.floor()  # values >= 0: floor = truncation
    return v.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class Generator:
    """G1 and G2 of one checkpoint, ready to run: `coarse, refined = gen(source, target_kp)`."""

    g1: torch.nn.Module
    g2: torch.nn.Module
    arch: Any
    map_kind: str
    map_radius: int
    map_sigma: float
    step: int
    stage2: bool  # False: the checkpoint is from stage I (G2 untrained), refined = coarse
    path: Path
    device: torch.device

    @property
    def size(self) -> tuple[int, int]:
        return self.arch.height, self.arch.width

    @torch.inference_mode()
    def __call__(
        self, source: np.ndarray, target_kp: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, H, W, 3) sources, float (B, 18, 2) target keypoints -> (coarse, refined),
        each (B, 3, H, W) float in about [-1, 1]."""
        from pg2kit.data import pose_input

        h, w = self.size
        if source.shape[1:] != (h, w, 3):
            raise GenerateError(
                f"images of {source.shape[1]}x{source.shape[2]}, the model was trained at {h}x{w}"
            )
        src = torch.from_numpy(np.ascontiguousarray(source)).to(self.device)
        src = src.permute(0, 3, 1, 2).float().mul_(1 / 127.5).sub_(1.0)
        kp = torch.from_numpy(np.asarray(target_kp, np.float32)).to(self.device)
        pose = pose_input(kp, h, w, self.map_kind, self.map_radius, self.map_sigma)
        coarse = self.g1(src, pose)
        refined = coarse + self.g2(coarse, src) if self.stage2 else coarse
        return coarse, refined


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or the newest checkpoint of a run folder."""
    from pg2kit.train import find_checkpoints

    path = Path(path)
    if path.is_dir():
        found = find_checkpoints(path)
        if not found:
            raise GenerateError(
                f"{path}: a folder without checkpoints/ckpt-*.pt (not a run folder)"
            )
        return found[-1]
    if not path.is_file():
        raise GenerateError(f"{path}: no such checkpoint file or run folder")
    return path


def load_generator(path: str | Path, device: str = "auto") -> Generator:
    """G1 and G2 built from the checkpoint's own architecture and weights."""
    from pg2kit.models import Arch, build_models
    from pg2kit.train import TrainError, load_checkpoint

    ckpt_path = resolve_checkpoint(path)
    try:
        ckpt = load_checkpoint(ckpt_path)
    except TrainError as e:
        raise GenerateError(str(e)) from None
    names = {f.name for f in dataclasses.fields(Arch)}
    arch = Arch(**{k: v for k, v in ckpt["arch"].items() if k in names})
    g1, g2, _ = build_models(arch)
    try:
        g1.load_state_dict(ckpt["g1"])
        g2.load_state_dict(ckpt["g2"])
    except (RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GenerateError(
            f"{ckpt_path}: weights do not fit this pg2kit's networks ({first}); was it saved by "
            "another pg2kit version?"
        ) from None
    cfg = ckpt.get("config", {})
    step = int(ckpt["step"])
    g1_steps = int(cfg.get("g1_steps", 0))
    stage2 = cfg.get("stage", "both") != "g1" and step > g1_steps
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    return Generator(
        g1=g1.eval().to(dev),
        g2=g2.eval().to(dev),
        arch=arch,
        map_kind=cfg.get("map_kind", "disk"),
        map_radius=int(cfg.get("map_radius", 4)),
        map_sigma=float(cfg.get("map_sigma", 6.0)),
        step=step,
        stage2=stage2,
        path=ckpt_path,
        device=dev,
    )


# ---------------------------------------------------------------- pairs of a prepared folder


def _names_to_ids(names: np.ndarray, wanted: list[str], where: str) -> np.ndarray:
    """Ids of `wanted` names in a split: exact name, else the same stem (x.jpg vs x.png)."""
    exact = {str(n): i for i, n in enumerate(names)}
    stems: dict[str, int] = {}
    for i, n in enumerate(names):
        stems.setdefault(Path(str(n)).stem, i)
    ids, unknown = [], []
    for n in wanted:
        i = exact.get(n, stems.get(Path(n).stem))
        if i is None:
            unknown.append(n)
        ids.append(-1 if i is None else i)
    if unknown:
        more = f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise GenerateError(f"{where}: name {unknown[0]!r}{more} is not in the split")
    return np.asarray(ids, np.int64)


def load_pairs(
    data: str | Path, split: str = "test", pairs_csv: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pairs (P, 2) sample ids, names (N,), keypoints (N, 18, 2)) of a split.

    Pairs come from pairs.h5 in stored order, or from a community pairs CSV (`from,to`) matched
    by name against the split.
    """
    from pg2kit import shards

    fields = shards.read_split_fields(Path(data), split, ["name", "keypoints"])
    names, kp = fields["name"], fields["keypoints"].astype(np.float32)
    if pairs_csv is None:
        pairs = shards.read_pairs(Path(data), split)
    else:
        from pg2kit.formats import read_pairs_csv

        rows = read_pairs_csv(pairs_csv)
        if not rows:
            raise GenerateError(f"{pairs_csv}: no pairs")
        flat = [n for row in rows for n in row]
        pairs = _names_to_ids(names, flat, f"{pairs_csv} vs split {split!r} of {data}")
        pairs = pairs.reshape(-1, 2)
    return pairs, names, kp


def _skeleton(kp: np.ndarray, h: int, w: int) -> np.ndarray:
    from pg2kit import viz

    return viz.draw_skeleton(np.zeros((h, w, 3), np.uint8), kp)


def generate_pairs(
    gen: Generator,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    pairs_csv: str | Path | None = None,
    strips: bool = False,
    coarse: bool = False,
    quantise: str = "round",
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate every pair (resumable: pairs whose files all exist are skipped). Returns the
    summary that is also written to OUT/generate.json."""
    from tqdm import tqdm

    from pg2kit import shards, viz

    if quantise not in QUANTISE:
        raise GenerateError(f"quantise must be one of {', '.join(QUANTISE)}, not {quantise!r}")
    data, out = Path(data), Path(out_dir)
    pairs, names, kps = load_pairs(data, split, pairs_csv)
    if limit is not None:
        pairs = pairs[:limit]
    reader = shards.SplitReader(data, split)
    h, w = gen.size
    frame = reader.read("image", [int(pairs[0, 0])]).shape[1:3] if len(pairs) else (h, w)
    if tuple(frame) != (h, w):
        raise GenerateError(
            f"{data}: split {split!r} has {frame[0]}x{frame[1]} images, the model "
            f"{gen.path} was trained at {h}x{w}"
        )
    out.mkdir(parents=True, exist_ok=True)
    suffixes = [""] + (["_vis"] if strips else []) + (["_coarse"] if coarse else [])
    todo = [
        i
        for i, (a, b) in enumerate(pairs)
        if not all((out / pair_file_name(names[a], names[b], s)).exists() for s in suffixes)
    ]
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), unit="pair", desc="generate", disable=not progress)
    for s in range(0, len(todo), batch_size):
        idx = pairs[todo[s : s + batch_size]]
        src_ids, tgt_ids = idx[:, 0], idx[:, 1]
        source = reader.read("image", src_ids)
        c, r = gen(source, kps[tgt_ids])
        refined = to_uint8(r, quantise)
        coarse_u8 = to_uint8(c, quantise) if coarse else None
        target = reader.read("image", tgt_ids) if strips else None
        for j, (a, b) in enumerate(idx):
            na, nb = str(names[a]), str(names[b])
            viz.save_png(out / pair_file_name(na, nb), refined[j])
            if coarse_u8 is not None:
                viz.save_png(out / pair_file_name(na, nb, "_coarse"), coarse_u8[j])
            if target is not None:
                panels = [source[j], _skeleton(kps[a], h, w), target[j], _skeleton(kps[b], h, w)]
                viz.save_png(out / pair_file_name(na, nb, "_vis"), np.hstack(panels + [refined[j]]))
        bar.update(len(idx))
    bar.close()
    reader.close()
    seconds = time.perf_counter() - t0
    summary = {
        "checkpoint": str(gen.path),
        "step": gen.step,
        "stage2": gen.stage2,
        "arch": gen.arch.to_dict(),
        "data": str(data),
        "split": split,
        "pairs_csv": None if pairs_csv is None else str(pairs_csv),
        "pairs": int(len(pairs)),
        "generated_now": len(todo),
        "skipped_existing": int(len(pairs) - len(todo)),
        "quantise": quantise,
        "strips": strips,
        "coarse": coarse,
        "seconds": round(seconds, 3),
        "device": str(gen.device),
        "file_names": "<from>___<to>.png (+ _vis, _coarse); names as stored, extension included",
    }
    from pg2kit.atomic import write_text

    write_text(out / INFO_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------- one photo, a new pose


def _fit_keypoints(kp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Keypoints of a pose given without its image (OpenPose JSON), put into the model's frame
    as `prepare folder` frames a person: the crop geometry depends on the keypoints only."""
    from pg2kit.datasets.folder import Folder

    ok = kp[:, 0] >= 0
    if not ok.any():
        raise GenerateError("the target pose has no keypoints")
    w = int(np.ceil(kp[ok, 0].max())) + 1
    h = int(np.ceil(kp[ok, 1].max())) + 1
    canvas = np.zeros((h, w, 3), np.uint8)  # only its size is used
    _, mapped, _, _ = Folder(size=size).crop(canvas, kp, (kp[:, 0] >= 0).astype(np.float32))
    return mapped


def frame_photo(
    image: np.ndarray, size: tuple[int, int], keypoints: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The person of a photo cropped into the model's frame, and its keypoints there.

    Without `keypoints` the photo goes through `prepare folder`'s person finding (detector,
    identity person, crop_person); with imported keypoints through its keypoint crop.
    """
    if keypoints is not None:
        from pg2kit.datasets.folder import Folder

        scores = (keypoints[:, 0] >= 0).astype(np.float32)
        try:
            out, kp, _, _ = Folder(size=size).crop(image, keypoints, scores)
        except ValueError as e:
            raise GenerateError(str(e)) from None
        return out, kp
    from pg2kit.persons import PersonFinder, choose_identity_person, crop_person

    finder = PersonFinder()
    try:
        persons = finder(image)
    finally:
        finder.close()
    pick = choose_identity_person(persons, image.shape[:2]) if persons else None
    if pick is None:
        raise GenerateError("no person found")
    p = persons[pick]
    crop, to_crop = crop_person(image, p.box, size)
    return crop, to_crop(p.keypoints)


def read_pose(spec: str, size: tuple[int, int]) -> np.ndarray:
    """Target keypoints (18, 2) in the model frame from a photo, an OpenPose JSON file, or a
    Def-GAN annotation CSV row given as FILE.csv:NAME (coordinates taken as they are)."""
    from pg2kit.formats import read_defgan_annotations, read_openpose_json
    from pg2kit.imageio import is_image_file, load_rgb

    path, _, row = spec.partition(".csv:")
    if row:
        table = read_defgan_annotations(path + ".csv")
        names = list(table.names)
        if row not in names:
            raise GenerateError(f"{path}.csv: no row named {row!r}")
        return np.asarray(table.keypoints[names.index(row)], np.float32)
    p = Path(spec)
    if not p.is_file():
        raise GenerateError(f"{p}: no such pose file (a photo, an OpenPose .json or FILE.csv:NAME)")
    if p.suffix.lower() == ".json":
        kp, _ = read_openpose_json(p)
        return _fit_keypoints(kp, size)
    if p.suffix.lower() == ".csv":
        raise GenerateError(f"{p}: give the row as {p}:NAME")
    if is_image_file(p):
        try:
            return frame_photo(load_rgb(p), size)[1]
        except GenerateError as e:
            raise GenerateError(f"{p}: {e}") from None
    raise GenerateError(f"{p}: not a photo, an OpenPose .json or a Def-GAN .csv")


def generate_one(
    gen: Generator,
    source_photo: str | Path,
    pose: str,
    out_path: str | Path,
    source_keypoints: str | Path | None = None,
    quantise: str = "round",
    strip: bool = False,
) -> dict[str, Any]:
    """Put the person of `source_photo` into the pose `pose`; writes OUT.png (and with `strip`
    OUT_vis.png: source | source pose | target pose | generated)."""
    from pg2kit import viz
    from pg2kit.formats import read_openpose_json
    from pg2kit.imageio import load_rgb

    src_path = Path(source_photo)
    if not src_path.is_file():
        raise GenerateError(f"{src_path}: no such photo")
    image = load_rgb(src_path)
    kp_in = None
    if source_keypoints is not None:
        kp_in, _ = read_openpose_json(source_keypoints, image.shape[1], image.shape[0])
    try:
        source, source_kp = frame_photo(image, gen.size, kp_in)
    except GenerateError as e:
        raise GenerateError(f"{src_path}: {e}") from None
    target_kp = read_pose(pose, gen.size)
    coarse, refined = gen(source[None], target_kp[None])
    out = to_uint8(refined, quantise)[0]
    out_path = Path(out_path)
    viz.save_png(out_path, out)
    written = [str(out_path)]
    if strip:
        h, w = gen.size
        panels = [source, _skeleton(source_kp, h, w), _skeleton(target_kp, h, w), out]
        vis = out_path.with_name(out_path.stem + "_vis.png")
        viz.save_png(vis, np.hstack(panels))
        written.append(str(vis))
    return {"written": written, "source_keypoints": int((source_kp[:, 0] >= 0).sum())}
