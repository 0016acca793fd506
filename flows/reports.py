"""Run reports: per-category metrics and the comparison with the paper, as tables and Prefect artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stages import methods
from storage.tables import read_table

DEFAULT_METHOD = "realnet"  # metrics tables written before evaluate recorded the method


def paper_results(method: str = DEFAULT_METHOD) -> pd.DataFrame:
    """The per-category numbers (percent) of a method's paper, shipped beside the method's stages."""
    return methods.paper_results(method)


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
    ours["method"] = metrics["method"].fillna(DEFAULT_METHOD) if "method" in metrics else DEFAULT_METHOD
    paper = pd.concat([paper_results(m).assign(method=m) for m in ours["method"].unique()], ignore_index=True)
    table = ours.merge(paper.drop(columns=["source"]), on=["method", "dataset", "category"], how="left",
                       suffixes=("", "_paper"))
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
                          description="Per-category results vs each method's paper (percent)")
    report = write_run_report(rows, root)
    if report is not None:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(key="realnet-report", link=report.resolve().as_uri(), link_text=report.name,
                             description="The run's report page (metrics, ROC curves, thresholds, worst cases)")


def write_run_report(rows: list[dict[str, Any]], root: str) -> Path | None:
    """``<root>/reports/report-<time>.html`` for this run's categories (a local root only), or None."""
    from datetime import datetime, timezone

    from flows.html_report import write_report

    if "://" in root:
        return None
    evaluated = {(r["dataset"], r["category"]) for r in rows if r["stage"] == "evaluate"}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return write_report(root, Path(root) / "reports" / f"report-{stamp}.html",
                        sorted({d for d, _ in evaluated}), sorted({c for _, c in evaluated}))


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")
