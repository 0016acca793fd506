"""`realnet run` through Prefect's ephemeral API (no server): completes, publishes table artifacts,
and a second run reuses every artifact. One flow run costs about 20 s of Prefect start-up, so this
file keeps to the essentials and runs the CLI exactly as a user would."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from flows.reports import comparison, paper_results, run_metrics

REPO = Path(__file__).resolve().parents[2]
STAGES = ["train_diffusion", "generate_sia", "select_features", "train_realnet", "calibrate", "evaluate"]


def _realnet(args: list[str], home: Path, timeout: float = 600) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", REALNET_DEBUG="1")
    cmd = [sys.executable, "-m", "flows.cli", "run", "--json", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout[proc.stdout.find('{\n  "profile"'):])  # the summary follows any log lines


@pytest.mark.slow
@pytest.mark.prefect
def test_realnet_run_through_prefect_completes_then_reuses_everything(tmp_path, tiny_overrides):
    home, artifacts = tmp_path / "prefect_home", tmp_path / "artifacts"
    args = ["--category", "brick", "--artifacts", str(artifacts)]
    for o in tiny_overrides:
        args += ["--set", o]

    first = _realnet(args, home)
    assert [(r["category"], r["stage"], r["status"]) for r in first["stages"]] == [
        ("brick", s, "ran") for s in STAGES]
    assert all((Path(r["path"]) / "manifest.json").is_file() for r in first["stages"])

    second = _realnet(args, home)
    assert {r["status"] for r in second["stages"]} == {"reused"}
    assert [r["key"] for r in second["stages"]] == [r["key"] for r in first["stages"]]

    # Table artifacts of both flow runs, read straight from the ephemeral API's SQLite database.
    with sqlite3.connect(home / "prefect.db") as db:
        rows = db.execute("SELECT key, type, data FROM artifact").fetchall()
    keys = [k for k, _, _ in rows]
    for key in ("realnet-run-summary", "realnet-metrics", "realnet-vs-paper"):
        assert keys.count(key) == 2, (key, keys)
    assert {t for k, t, _ in rows if k != "realnet-report"} == {"table"}
    links = [json.loads(d) if d.startswith('"') else d for k, t, d in rows if k == "realnet-report"]
    assert len(links) == 2, keys  # each run links its report page (a markdown link), which lies in the root
    url = re.search(r"\((file://[^)]+)\)", links[-1]).group(1)
    assert Path(unquote(url.removeprefix("file://"))).is_file() and str(artifacts) in unquote(url)
    vs_paper = [json.loads(d) for k, _, d in rows if k == "realnet-vs-paper"][-1]
    vs_paper = json.loads(vs_paper) if isinstance(vs_paper, str) else vs_paper
    assert vs_paper[0]["category"] == "brick" and "image_auroc_paper" in vs_paper[0]


def test_run_metrics_reads_the_evaluate_tables_of_a_run(tmp_path):
    rows = []
    for cat in ("brick", "grass"):
        path = tmp_path / cat
        path.mkdir()
        pd.DataFrame([{"dataset": "demo", "category": cat, "image_auroc": 0.9, "pixel_auroc": 0.8, "pro": 0.7}]
                     ).to_parquet(path / "metrics.parquet")
        rows += [{"stage": "train_realnet", "path": str(tmp_path / "nope")}, {"stage": "evaluate", "path": str(path)}]
    metrics = run_metrics(rows)
    assert list(metrics["category"]) == ["brick", "grass"]
    assert run_metrics([{"stage": "train_realnet", "path": "x"}]).empty


def test_comparison_puts_the_papers_numbers_next_to_ours_in_percent():
    paper = paper_results()
    assert len(paper) == 36
    bottle = paper[paper.category == "bottle"].iloc[0]
    ours = pd.DataFrame([{"dataset": "mvtec", "category": "bottle", "image_auroc": 0.5, "pixel_auroc": 0.6, "pro": 0.7},
                         {"dataset": "demo", "category": "brick", "image_auroc": 1.0, "pixel_auroc": 1.0, "pro": 1.0}])
    table = comparison(ours).set_index("category")
    assert table.loc["bottle", "image_auroc"] == 50.0
    assert table.loc["bottle", "image_auroc_paper"] == pytest.approx(bottle.image_auroc, abs=0.01)
    assert table.loc["bottle", "image_auroc_diff"] == pytest.approx(50.0 - bottle.image_auroc, abs=0.01)
    assert pd.isna(table.loc["brick", "image_auroc_paper"])  # no paper number for the demo data
