"""data.seen_anomalies: a seeded selection of anomalous test images, held out of every test set a stage reads."""

import pytest

from realnet_core.config import load_config
from realnet_core.data.errors import DatasetError
from stages.inputs import category_split, seen_anomalies


def _cfg(root, *extra):
    return load_config("demo", [f"data.roots.demo={root}", *extra])


def test_seen_anomalies_leave_the_test_set(demo_root):
    full = category_split(_cfg(demo_root), "demo", "brick")
    cfg = _cfg(demo_root, "data.seen_anomalies=3")
    seen = seen_anomalies(cfg, "demo", "brick")
    held = category_split(cfg, "demo", "brick")
    assert len(seen) == 3 and all(s.label == 1 and s.mask_path for s in seen)
    assert {s.path for s in seen}.isdisjoint(s.path for s in held.test)
    assert len(held.test) == len(full.test) - 3
    assert {s.path for s in held.test} | {s.path for s in seen} == {s.path for s in full.test}
    assert held.train == full.train


def test_the_selection_is_seeded(demo_root):
    def pick(*extra):
        return [s.path for s in seen_anomalies(_cfg(demo_root, "data.seen_anomalies=2", *extra), "demo", "brick")]

    assert pick() == pick()
    assert {tuple(pick(f"data.seen_seed={s}")) for s in range(6)} != {tuple(pick())}
    assert seen_anomalies(_cfg(demo_root), "demo", "brick") == []


def test_more_seen_anomalies_than_the_test_set_holds_is_an_error(demo_root):
    with pytest.raises(DatasetError, match=r"data.seen_anomalies=99: .*brick has only 4 anomalous test images"):
        category_split(_cfg(demo_root, "data.seen_anomalies=99"), "demo", "brick")
