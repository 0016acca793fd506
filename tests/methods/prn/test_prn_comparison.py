"""The paper comparison keeps PRN's published numbers to its own protocol (10 seen anomalies)."""

import pandas as pd
import pytest

from flows.reports import comparison
from stages import methods


def _ours(seen: int) -> dict:
    return {"dataset": "mvtec", "category": "bottle", "image_auroc": 0.9, "pixel_auroc": 0.9, "pro": 0.9,
            "method": "prn", "seen_anomalies": seen}


def test_prn_paper_numbers_are_tables_1_and_2():
    paper = methods.paper_results("prn")
    assert len(paper) == 15 and set(paper.dataset) == {"mvtec"} and (paper.seen_anomalies == 10).all()
    means = paper[["image_auroc", "pixel_auroc", "pro", "ap"]].mean()
    assert means.round(1).tolist() == [99.4, 99.0, 96.1, 78.6]  # the papers' averages


def test_only_the_papers_protocol_gets_its_numbers():
    table = comparison(pd.DataFrame([_ours(10), _ours(0)]))
    assert table.loc[0, "image_auroc_paper"] == pytest.approx(100.0)
    assert table.loc[0, "note"] == ""
    assert pd.isna(table.loc[1, "image_auroc_paper"])
    assert table.loc[1, "note"] == "no published number with seen_anomalies=0 (the paper's: 10)"
    realnet = comparison(pd.DataFrame([{**_ours(0), "method": "realnet"}]))
    assert realnet.loc[0, "image_auroc_paper"] == pytest.approx(100.0) and realnet.loc[0, "note"] == ""
