"""`realnet tables` as a shell user runs it: row limits, and a reader that stops early."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from storage.store import Store
from storage.tables import write_table

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def afs_root(tmp_path: Path) -> Path:
    store = Store(str(tmp_path))
    with store.build(store.ref("select_features", "demo", "brick", "k1"), {}) as staging:
        write_table(pd.DataFrame({"layer": ["layer1"] * 5000, "channel": range(5000), "loss": 0.5}),
                    staging / "afs.parquet")
    return tmp_path


def _tables(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "tables", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_max_rows_limits_the_printed_rows(afs_root):
    out, _ = _tables("afs", "--artifacts", str(afs_root), "--max-rows", "6").communicate(timeout=120)
    lines = out.decode().strip().splitlines()
    assert len(lines) <= 8 and "..." in out.decode(), lines  # header, 3 + 3 rows and the elision


def test_a_reader_that_stops_early_gets_no_error_message(afs_root):
    proc = _tables("afs", "--artifacts", str(afs_root), "--max-rows", "0", "--json")
    proc.stdout.read(100)
    proc.stdout.close()  # what `| head` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err
