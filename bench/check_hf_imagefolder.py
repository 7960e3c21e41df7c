"""Load a `pg2kit export --format controlnet` folder with Hugging Face `datasets` itself.

`datasets` is not a pg2kit dependency (it pins numpy>=2 in new releases), so install it apart
and run this script with it on the path; pg2kit runs in a subprocess with the normal environment:

    pip install --target /tmp/hf datasets
    python bench/check_hf_imagefolder.py --datasets-path /tmp/hf

It prepares a small synthetic folder, exports it, loads it with `load_dataset("imagefolder")`,
casts `conditioning_image` to an image column as docs/formats.md shows, and checks every row
against the exported files (split sizes, image sizes, captions).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

LOADER = r"""
import json, os, sys
from datasets import Image, load_dataset
root = sys.argv[1]
out = {"version": __import__("datasets").__version__, "splits": {}}
dd = load_dataset("imagefolder", data_dir=root)
for split, ds in dd.items():
    first_raw = ds[0]["conditioning_image"]
    ds = ds.map(lambda r: {"conditioning_image": os.path.join(root, split, r["conditioning_image"])})
    ds = ds.cast_column("conditioning_image", Image())
    rows = [{"image": list(r["image"].size), "cond": list(r["conditioning_image"].convert("RGB").size),
             "text": r["text"]} for r in ds]
    out["splits"][split] = {"columns": ds.column_names, "raw_conditioning": type(first_raw).__name__,
                            "rows": rows}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets-path", required=True, help="folder where `datasets` is installed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pg = [sys.executable, "-m", "pg2kit.cli"]
        subprocess.run([*pg, "prepare", "synthetic", "-o", tmp / "d", "--ids", "8", "--poses", "3",
                        "--quiet"], check=True)  # fmt: skip
        subprocess.run([*pg, "pairs", tmp / "d", "--protocol", "pg2"], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([*pg, "export", tmp / "d", "--format", "controlnet", "-o", tmp / "cn",
                        "--quiet"], check=True)  # fmt: skip
        env = {**os.environ, "PYTHONPATH": args.datasets_path, "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_OFFLINE": "1"}  # fmt: skip
        res = subprocess.run([sys.executable, "-c", LOADER, str(tmp / "cn")], env=env,
                             capture_output=True, text=True, check=True)  # fmt: skip
        got = json.loads(res.stdout.strip().splitlines()[-1])
        ok = True
        for split in ("train", "test"):
            meta = [json.loads(x) for x in (tmp / "cn" / split / "metadata.jsonl").open()]
            rows = got["splits"][split]["rows"]
            same = len(rows) == len(meta) and all(
                r["image"] == r["cond"] and r["text"] == m["text"]
                for r, m in zip(rows, meta, strict=True)
            )
            ok &= same and got["splits"][split]["columns"] == [
                "image",
                "conditioning_image",
                "text",
            ]
            print(
                f"{split}: {len(rows)} rows via datasets {got['version']}, columns "
                f"{got['splits'][split]['columns']}, conditioning_image arrives as "
                f"{got['splits'][split]['raw_conditioning']} before the cast; "
                f"rows match metadata.jsonl: {same}"
            )
        print("OK" if ok else "MISMATCH")
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
