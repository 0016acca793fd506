"""Building the demo dataset on the fly says so on stderr, so `realnet run --json` stays valid JSON."""

from __future__ import annotations

from flows.plan import ensure_demo_data, make_config


def test_building_demo_data_reports_on_stderr_not_stdout(tmp_path, capsys):
    root = tmp_path / "demo_data"
    cfg = make_config("demo", [f"data.roots.demo={root}"], None, None)
    ensure_demo_data(cfg, [("demo", "brick")])
    out, err = capsys.readouterr()
    assert (root / "brick" / "train" / "good").is_dir()
    assert out == "" and f"building the demo dataset in {root}" in err
