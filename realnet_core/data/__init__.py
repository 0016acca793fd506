"""Dataset access: readers for MVTec-AD, MPDD, BTAD and VisA, validation, and the demo dataset."""

from .errors import DatasetError
from .images import load_batch, read_mask, read_rgb, resize_mask, resize_rgb
from .readers import CategorySplit, TestSample, read_category
from .registry import DATASETS, check_name, dataset_of

__all__ = [
    "DATASETS",
    "CategorySplit",
    "DatasetError",
    "TestSample",
    "check_name",
    "dataset_of",
    "load_batch",
    "read_category",
    "read_mask",
    "read_rgb",
    "resize_mask",
    "resize_rgb",
]
