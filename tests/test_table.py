"""`prepare table`: photos listed in a CSV/Parquet file; every bad row is a failures.csv row."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pg2kit import shards
from pg2kit.cli import cli
from pg2kit.datasets.base import AdapterError
from pg2kit.datasets.table import Table
from tests._scenes import nearest, photo


def _photos(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img, _ = photo(280, 400, [(i + 1, 0, 120, 250)])
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


TABLE = (
    "\ufeffpath,identity,camera,split,frame\n"  # a UTF-8 byte-order mark before the header
    "img/a.png,anna,1,,\n"
    "{abs},ben,2,test,7\n"
    "img/missing.png,anna,,,\n"  # no such file
    "img/c.png,,,,\n"  # empty identity
    "img/c.png,a/b,,,\n"  # identity with a separator
    "img/c.png,carl,,../x,\n"  # bad split
    "img/c.png,carl,one,,\n"  # camera not a number
    "img/a.png,anna,,,\n"  # the same photo again
    ",anna,,,\n"  # empty path
    "img/c.png,carl,3,,2.5\n"  # frame not whole
)


def _write_table(tmp_path: Path) -> Path:
    _photos(tmp_path / "img", ["a.png", "b.png", "c.png"])
    table = tmp_path / "photos.csv"
    table.write_text(TABLE.format(abs=tmp_path / "img" / "b.png"), encoding="utf-8")
    return table


def test_scan_rows_and_reasons(tmp_path):
    table = _write_table(tmp_path)
    scan = Table().scan(table)
    recs = {r.name: r for rs in scan.records.values() for r in rs}
    assert sorted(recs) == ["anna_a.png", "ben_b.png"]
    assert recs["anna_a.png"].split == "train" and recs["anna_a.png"].camera == 1
    assert recs["anna_a.png"].rel_path == "img/a.png"  # relative to the table's folder
    assert recs["ben_b.png"].split == "test" and recs["ben_b.png"].frame == 7
    reasons = [reason for _, reason in scan.failures]
    expect = ["line 4: file not found", "line 5: empty identity", "line 6: identity 'a/b'",
              "line 7: split '../x'", "line 8: camera 'one'", "line 9: repeats the path of line 2",
              "line 10: empty path", "line 11: frame '2.5'"]  # fmt: skip
    assert len(reasons) == len(expect)
    for got, want in zip(reasons, expect, strict=True):
        assert want in got, (got, want)
    assert all(r.startswith("photos.csv line") for r in reasons)


def test_scan_table_level_errors(tmp_path):
    (tmp_path / "t.csv").write_text("file,who\nx.png,a\n")
    with pytest.raises(AdapterError, match="no column 'path' or 'identity'"):
        Table().scan(tmp_path / "t.csv")
    (tmp_path / "l1.csv").write_bytes("path,identity\ncaf\xe9.png,a\n".encode("latin-1"))
    with pytest.raises(AdapterError, match="not UTF-8"):
        Table().scan(tmp_path / "l1.csv")
    (tmp_path / "only_bad.csv").write_text("path,identity\nnope.png,a\n")
    with pytest.raises(AdapterError, match="no usable rows.*file not found"):
        Table().scan(tmp_path / "only_bad.csv")


def test_parquet(tmp_path, monkeypatch):
    _photos(tmp_path / "img", ["a.png"])
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["img/a.png", "img/zz.png"], "identity": ["anna", "bo"],
                             "camera": [3, None]}), tmp_path / "t.parquet")  # fmt: skip
    scan = Table().scan(tmp_path / "t.parquet")
    assert [r.camera for r in scan.records["train"]] == [3]
    assert "t.parquet row 2: file not found" in scan.failures[0][1]
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were missing
    with pytest.raises(AdapterError, match=r'pip install "pg2kit\[parquet\]"'):
        Table().scan(tmp_path / "t.parquet")


def test_prepare_table_cli_finds_the_person(tmp_path):
    pytest.importorskip("ai_edge_litert")
    table = _write_table(tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["prepare", "table", str(table), "-o", str(out), "--size",
                                 "128x64", "--workers", "1", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = {s: shards.read_split_fields(out, s, ["name", "source_box", "camera", "frame"])
           for s in ("train", "test")}  # fmt: skip
    assert got["train"]["name"].tolist() == ["anna_a.png"]
    assert got["test"]["name"].tolist() == ["ben_b.png"]
    assert got["test"]["frame"].tolist() == [7] and got["train"]["camera"].tolist() == [1]
    _, boxes = photo(280, 400, [(1, 0, 120, 250)])
    assert nearest(got["train"]["source_box"][0], boxes) == 0
    with open(out / "failures.csv", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if "line" in row["reason"]]
    assert len(rows) == 8
    r = CliRunner().invoke(cli, ["prepare", "table", str(tmp_path), "-o", str(out)])
    assert r.exit_code == 2 and "needs a .csv or .parquet file" in r.output
    np.testing.assert_array_less(0, got["train"]["source_box"][0][2:])
