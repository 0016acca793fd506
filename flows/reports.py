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
    # A paper's numbers hold for its own seen-anomaly protocol only (PRN's 10 real anomalies; none for RealNet).
    ours["seen_anomalies"] = metrics["seen_anomalies"].fillna(0).astype(int) if "seen_anomalies" in metrics else 0
    paper = pd.concat([_with_seen(paper_results(m)).assign(method=m) for m in ours["method"].unique()],
                      ignore_index=True)
    keys = ["method", "dataset", "category"]
    table = ours.merge(paper[[*keys, "seen_anomalies", "image_auroc", "pixel_auroc", "pro"]],
                       on=[*keys, "seen_anomalies"], how="left", suffixes=("", "_paper"))
    for col in ("image_auroc", "pixel_auroc", "pro"):
        table[f"{col}_diff"] = table[col] - table[f"{col}_paper"]
    published = table[keys].merge(paper[[*keys, "seen_anomalies"]], on=keys, how="left")["seen_anomalies"]
    other = table["image_auroc_paper"].isna() & published.notna().to_numpy()
    table["note"] = [f"no published number with seen_anomalies={n} (the paper's: {int(p)})" if o else ""
                     for n, p, o in zip(table["seen_anomalies"], published.fillna(0), other, strict=True)]
    return table.round(2)


def _with_seen(paper: pd.DataFrame) -> pd.DataFrame:
    seen = paper["seen_anomalies"].fillna(0) if "seen_anomalies" in paper else 0
    return paper.assign(seen_anomalies=pd.Series(seen, index=paper.index).astype(int))


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
