"""Cross-check pg2kit's Inception and LPIPS networks against torch-fidelity and lpips.

Both packages import torchvision, which does not import with this torch; install them without
dependencies into a side folder and this script loads only the pieces it needs (torchvision is
stubbed for lpips's AlexNet with a same-layout random AlexNet):

    pip install --no-deps --target /tmp/xcheck torch-fidelity lpips
    python bench/metric_crosscheck.py --pkgs /tmp/xcheck

Random weights (the real ones are not available offline); same state dict into both sides.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch


def inception(pkgs: Path, tmp: Path) -> None:
    pkg = types.ModuleType("torch_fidelity")
    pkg.__path__ = [str(pkgs / "torch_fidelity")]  # skip its __init__ (imports torchvision)
    sys.modules["torch_fidelity"] = pkg
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from pg2kit.nets.inception import InceptionV3TF, load_inception

    torch.manual_seed(0)
    net = InceptionV3TF()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial BN statistics
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    torch.save(net.state_dict(), tmp / "inception_random.pth")
    theirs = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"],
        feature_extractor_weights_path=str(tmp / "inception_random.pth"),
    )  # fmt: skip
    mine = load_inception(tmp / "inception_random.pth")
    x = torch.randint(0, 256, (4, 3, 128, 64), dtype=torch.uint8)
    with torch.no_grad():
        p1, l1 = mine(x)
        p2, l2 = theirs(x)
    print(f"Inception vs torch-fidelity: pool max |diff| {(p1 - p2).abs().max():.1e} "
          f"(max {p2.abs().max():.2f}), logits max |diff| {(l1 - l2).abs().max():.1e}")  # fmt: skip


def lpips_check(pkgs: Path, tmp: Path) -> None:
    n = torch.nn
    torch.manual_seed(0)
    feats = n.Sequential(
        n.Conv2d(3, 64, 11, 4, 2), n.ReLU(True), n.MaxPool2d(3, 2), n.Conv2d(64, 192, 5, padding=2),
        n.ReLU(True), n.MaxPool2d(3, 2), n.Conv2d(192, 384, 3, padding=1), n.ReLU(True),
        n.Conv2d(384, 256, 3, padding=1), n.ReLU(True), n.Conv2d(256, 256, 3, padding=1),
        n.ReLU(True), n.MaxPool2d(3, 2),
    )  # fmt: skip
    tv, tvm = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
    tvm.alexnet = lambda **kw: types.SimpleNamespace(features=feats)
    tv.models = tvm
    sys.modules.update({"torchvision": tv, "torchvision.models": tvm})
    sys.path.insert(0, str(pkgs))
    import lpips

    from pg2kit.nets.lpips import load_lpips

    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, tmp / "alex.pth")
    x = torch.randint(0, 256, (3, 3, 128, 64), dtype=torch.uint8)
    y = torch.randint(0, 256, (3, 3, 128, 64), dtype=torch.uint8)
    for ver in ("0.1", "0.0"):
        theirs = lpips.LPIPS(net="alex", version=ver, verbose=False)
        heads = pkgs / "lpips" / "weights" / f"v{ver}" / "alex.pth"
        mine = load_lpips(heads, tmp / "alex.pth", version=ver)
        with torch.no_grad():
            d1 = mine(x, y)
            d2 = theirs(x.float() / 127.5 - 1, y.float() / 127.5 - 1).flatten()
        print(f"LPIPS v{ver} (real heads {heads.name}) vs lpips: {d1.tolist()} vs {d2.tolist()},"
              f" max |diff| {(d1 - d2).abs().max():.1e}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pkgs", type=Path, default=Path("/tmp/xcheck"))
    ap.add_argument("--tmp", type=Path, default=Path("/tmp"))
    a = ap.parse_args()
    inception(a.pkgs, a.tmp)
    lpips_check(a.pkgs, a.tmp)


if __name__ == "__main__":
    main()
