"""The category registry and name validation."""

from __future__ import annotations

import pytest

from realnet_core.data.errors import DatasetError
from realnet_core.data.registry import DATASETS, check_name, dataset_of


def test_the_36_categories():
    sizes = {d: len(c) for d, c in DATASETS.items()}
    assert sizes == {"mvtec": 15, "visa": 12, "mpdd": 6, "btad": 3, "demo": 2, "dev": 4, "folder": 0}
    assert sum(v for k, v in sizes.items() if k not in ("demo", "dev")) == 36  # folder: the user's own names
    assert DATASETS["btad"] == ("01", "02", "03")
    assert DATASETS["demo"] == ("brick", "grass")


def test_dataset_of():
    for dataset, cats in DATASETS.items():
        for c in cats:
            assert dataset_of(c) == dataset
            check_name(dataset, c)
    with pytest.raises(DatasetError, match=r"'pcb5'.*'pcb\d'"):
        dataset_of("pcb5")
    with pytest.raises(DatasetError, match="metal_nut"):
        dataset_of("metalnut")


def test_check_name_rejects_unknown():
    with pytest.raises(DatasetError, match="unknown dataset 'mvtecad'.*mvtec"):
        check_name("mvtecad", "bottle")
    with pytest.raises(DatasetError, match="unknown category 'pcb1' for dataset 'mvtec'"):
        check_name("mvtec", "pcb1")


@pytest.mark.parametrize("name", ["", "..", "../bottle", "a/b", "a\\b", ".hidden", "bottle/..", "C:x"])
def test_check_name_rejects_path_escapes(name):
    with pytest.raises(DatasetError):
        check_name("mvtec", name)
    with pytest.raises(DatasetError):
        check_name(name, "bottle")
    with pytest.raises(DatasetError):
        dataset_of(name)
