"""``realnet report`` opened in real headless Chromium: no console error, the numbers and images are there."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from own_parts._parts import TREE_NAME

pytestmark = pytest.mark.slow
DRIVER = "/usr/bin/chromedriver"


def test_the_report_is_one_self_contained_page_with_every_category(parts_store, tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "report.html"
    assert main(["report", "--artifacts", str(parts_store["root"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report written to {out}"
    page = out.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page  # nothing fetched
    for text in (f"folder/{TREE_NAME}", "folder/plain", "folder/normal_only", "score histogram", "ROC curve",
                 "synthetic_batch.png", "false positives", "false negatives"):
        assert text in page, text


@pytest.mark.skipif(not (os.path.exists(DRIVER) and shutil.which("chromium")),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_the_report_loads_in_headless_chromium_with_its_numbers_and_images(parts_store, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from flows.html_report import write_report

    page = write_report(str(parts_store["root"]), tmp_path / "report.html")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # the given driver: no download
    try:
        driver.get(Path(page).as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        rows = driver.find_elements(By.CSS_SELECTOR, "table.metrics tbody tr")
        cells = {r.find_elements(By.TAG_NAME, "td")[2].text: r.find_elements(By.TAG_NAME, "td") for r in rows}
        assert set(cells) == {"plain", "normal_only", TREE_NAME}
        header = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "table.metrics thead th")]
        auroc = cells["plain"][header.index("image_auroc")].text
        assert 0 <= float(auroc) <= 100  # a number, in percent
        assert cells[TREE_NAME][header.index("pixel_auroc")].text == "null"
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) >= 12
        for img in images:  # every picture decoded by the browser, and inlined
            assert img.get_attribute("src").startswith("data:image/png;base64,")
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    finally:
        driver.quit()
