"""Building the demo dataset on the fly says so on stderr, so `realnet run --json` stays valid JSON."""

from __future__ import annotations

from flows.plan import ensure_demo_data, make_config
from stages.inputs import data_root


def test_building_demo_data_reports_on_stderr_not_stdout(tmp_path, capsys):
    root = tmp_path / "demo_data"
    cfg = make_config("demo", [f"data.roots.demo={root}"], None, None)
    ensure_demo_data(cfg, [("demo", "brick")])
    out, err = capsys.readouterr()
    assert (root / "brick" / "train" / "good").is_dir()
    assert out == "" and f"building the demo dataset in {root}" in err


def test_a_bundled_dataset_runs_without_a_root_and_keeps_a_given_one():
    # `realnet run --dataset dev` builds the set in ./dev_data; the stages must then read it from there,
    # not ask for a root it never needed.
    assert data_root(make_config("demo", None, "dev", None), "dev") == "dev_data"
    assert data_root(make_config("demo", None, "dev", {"dev": "/data/dev"}), "dev") == "/data/dev"
    assert data_root(make_config("demo", ["data.roots.dev=elsewhere"], "dev", None), "dev") == "elsewhere"
    assert data_root(make_config("demo", None, None, None), "demo") == "demo_data"  # the profile's own
