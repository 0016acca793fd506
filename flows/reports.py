"""Run reports: per-category metrics and the comparison with the paper, as tables and Prefect artifacts."""

from __future__ import annotations

from importlib import resources
from typing import Any

import pandas as pd

from storage.tables import read_table


def paper_results() -> pd.DataFrame:
    """The RealNet paper's per-category numbers (percent), shipped with the project."""
    with resources.files("flows").joinpath("paper_results.csv").open() as f:
        return pd.read_csv(f, dtype={"category": str})


def run_metrics(rows: list[dict[str, Any]]) -> pd.DataFrame:
    paths = [r["path"] for r in rows if r["stage"] == "evaluate"]
    if not paths:
        return pd.DataFrame()
    return pd.concat([read_table(f"{p}/metrics.parquet") for p in dict.fromkeys(paths)], ignore_index=True)


def comparison(metrics: pd.DataFrame) -> pd.DataFrame:
    """Ours next to the paper's, both in percent, with the difference."""
    if metrics.empty:
        return metrics
    ours = metrics[["dataset", "category", "image_auroc", "pixel_auroc", "pro"]].copy()
    for col in ("image_auroc", "pixel_auroc", "pro"):
        ours[col] = ours[col] * 100
    paper = paper_results().drop(columns=["source"])
    table = ours.merge(paper, on=["dataset", "category"], how="left", suffixes=("", "_paper"))
    for col in ("image_auroc", "pixel_auroc", "pro"):
        table[f"{col}_diff"] = table[col] - table[f"{col}_paper"]
    return table.round(2)


def publish_reports(rows: list[dict[str, Any]], root: str) -> None:
    """Table artifacts in the Prefect UI: the run summary, metrics, and metrics vs the paper."""
    from prefect.artifacts import create_table_artifact

    create_table_artifact(key="realnet-run-summary", table=_records(pd.DataFrame(rows)),
                          description=f"Stages of this run (artifacts at {root}): ran or reused")
    metrics = run_metrics(rows)
    if metrics.empty:
        return
    create_table_artifact(key="realnet-metrics", table=_records(metrics.round(4)),
                          description="Per-category image AUROC, pixel AUROC and PRO (fractions)")
    create_table_artifact(key="realnet-vs-paper", table=_records(comparison(metrics)),
                          description="Per-category results vs the RealNet paper (percent)")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")
