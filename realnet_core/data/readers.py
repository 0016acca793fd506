"""Readers that list the train and test images of one category, for every supported layout.

Layouts (``<root>`` is the dataset root, ``<cat>`` a category):

- mvtec, mpdd, demo, dev: ``<cat>/train/good``, ``<cat>/test/<defect>`` (``good`` is normal),
  masks ``<cat>/ground_truth/<defect>/<stem>_mask.png``.
- btad: ``<cat>/train/ok``, ``<cat>/test/{ok,ko}``, masks ``<cat>/ground_truth/ko/<stem>.png``
  (or ``.bmp``); images are ``.bmp`` or ``.png``.
- visa: the raw release (``<root>/split_csv/1cls.csv`` with columns object, split, label, image,
  mask; paths relative to ``<root>``) or the MVTec-style split layout (``<cat>/train/good``,
  ``<cat>/test/{good,bad}``, masks ``<cat>/ground_truth/bad/<stem>.png``), detected automatically.

The readers only list files (no decoding); ``check.check_category`` decodes and compares sizes.
All orders are sorted, so that a split is the same on every machine.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DatasetError, DatasetProblems
from .registry import check_name

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Folder names that hold normal images, per layout.
_NORMAL = {"mvtec": "good", "mpdd": "good", "demo": "good", "dev": "good", "visa": "good", "btad": "ok"}
VISA_CSV = os.path.join("split_csv", "1cls.csv")


@dataclass(frozen=True)
class TestSample:
    """One test image: ``label`` is 0 for normal and 1 for anomalous; ``mask_path`` None when normal."""

    __test__ = False  # not a pytest test class, despite the name

    path: str
    label: int
    defect: str
    mask_path: str | None


@dataclass
class CategorySplit:
    """The file lists of one category: train (normal only) and test images."""

    dataset: str
    category: str
    root: str
    train: list[str] = field(default_factory=list)
    test: list[TestSample] = field(default_factory=list)
    # Files left out of the lists above, one sentence each (read_category(strict=False) only).
    problems: list[str] = field(default_factory=list, compare=False)
    # Normal training images held back to set the decision threshold (data.val_fraction), never trained on.
    val: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "train": len(self.train),
            "test_good": sum(1 for s in self.test if s.label == 0),
            "test_anomalous": sum(1 for s in self.test if s.label == 1),
            "masks": sum(1 for s in self.test if s.mask_path is not None),
        }


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def link_problem(path: Path, root: Path) -> str | None:
    """Why ``path`` may not be used as a file of the dataset at ``root``, or None.

    Rules: a symlink whose target is missing (dangling) is an error, never skipped; a file (or a symlink,
    or a file below a symlinked folder) that resolves outside the dataset root is an error, so that the
    data a run reads is the data under its root. Symlinks that stay inside the root are followed.
    """
    if path.is_symlink() and not path.exists():
        return f"dangling symlink (its target {os.readlink(path)} does not exist): {path}"
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        return f"{path} leads out of the dataset root {root} (to {real}); copy the file into the root instead"
    return None


def list_images(folder: Path, root: Path | None = None, problems: list[str] | None = None) -> list[Path]:
    """Image files directly inside ``folder`` (hidden files skipped), sorted by name.

    With ``root`` and ``problems``, entries that break the link rules (``link_problem``) are left out
    and described in ``problems``; without, dangling symlinks are left out silently.
    """
    out = []
    for p in sorted(folder.iterdir()):
        if not is_image_file(p.name):
            continue
        if root is not None and problems is not None:
            problem = link_problem(p, root)
            if problem:
                problems.append(problem)
                continue
        if p.is_file():
            out.append(p)
    return out


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}")
    return path


def _find_mask(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    """First existing mask ``<folder>/<stem><suffix><ext>``, trying each suffix and image extension."""
    if not folder.is_dir():
        return None
    # One listing, case-insensitive on the extension, so .PNG / .bmp masks are found on any filesystem.
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file() or p.is_symlink()}
    for suffix in suffixes:
        for ext in (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"):
            hit = by_name.get(f"{stem}{suffix}{ext}".lower())
            if hit is not None:
                return hit
    return None


def _read_folder_layout(dataset: str, root: Path, category: str) -> CategorySplit:
    normal = _NORMAL[dataset]
    cat_dir = _require_dir(root / category, f"category folder for {dataset}/{category}")
    train_dir = _require_dir(cat_dir / "train" / normal, f"train folder for {dataset}/{category}")
    problems: list[str] = []  # every problem of the category, not only the first one
    train = list_images(train_dir, root, problems)
    if not train and not problems:  # (with problems, those say why: e.g. every image a dangling link)
        raise DatasetError(f"train folder for {dataset}/{category} has no images: {train_dir}")
    test_dir = _require_dir(cat_dir / "test", f"test folder for {dataset}/{category}")
    gt_dir = cat_dir / "ground_truth"
    # MVTec and MPDD name masks <stem>_mask.png; BTAD and split VisA use <stem>.png. Accept both
    # everywhere, preferring the dataset's own convention.
    suffixes = ("", "_mask") if dataset in ("btad", "visa") else ("_mask", "")

    test: list[TestSample] = []
    defects = sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for defect_dir in defects:
        defect = defect_dir.name
        for img in list_images(defect_dir, root, problems):
            if defect == normal:
                test.append(TestSample(str(img), 0, defect, None))
                continue
            mask = _find_mask(gt_dir / defect, img.stem, suffixes)
            if mask is None:
                expected = gt_dir / defect / f"{img.stem}{suffixes[0]}.png"
                problems.append(f"anomalous test image {img} has no mask (expected {expected})")
                continue
            problem = link_problem(mask, root)
            if problem:
                problems.append(problem)
                continue
            test.append(TestSample(str(img), 1, defect, str(mask)))
    return CategorySplit(dataset, category, str(root), [str(p) for p in train], test, problems)


def _read_visa_csv(root: Path, category: str) -> CategorySplit:
    csv_path = root / VISA_CSV
    _require_dir(root / category, f"category folder for visa/{category}")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DatasetError(f"cannot read VisA split file {csv_path}: {e}") from e
    if not rows:
        raise DatasetError(f"VisA split file {csv_path} is empty")
    needed = {"object", "split", "label", "image", "mask"}
    missing = needed - set(rows[0])
    if missing:
        raise DatasetError(f"VisA split file {csv_path} lacks columns {sorted(missing)}")

    def resolve(rel: str, line: int) -> Path:
        rel = rel.strip()
        p = Path(rel)
        # A relative path from the csv must stay inside the root.
        if p.is_absolute() or ".." in p.parts:
            raise DatasetError(f"{csv_path} line {line}: path {rel!r} escapes the dataset root")
        problem = link_problem(root / p, root) if (root / p).is_symlink() or (root / p).exists() else None
        if problem:
            raise DatasetError(f"{csv_path} line {line}: {problem}")
        return root / p

    train: list[Path] = []
    test: list[TestSample] = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        if row["object"].strip() != category:
            continue
        split, label = row["split"].strip().lower(), row["label"].strip().lower()
        if label not in ("normal", "anomaly"):
            raise DatasetError(f"{csv_path} line {i}: unknown label {row['label']!r}")
        image = resolve(row["image"], i)
        if not image.is_file():
            raise DatasetError(f"image listed in {csv_path} line {i} not found: {image}")
        if split == "train":
            if label != "normal":
                raise DatasetError(f"{csv_path} line {i}: anomalous image {image} in the train split")
            train.append(image)
        elif split == "test":
            if label == "normal":
                test.append(TestSample(str(image), 0, "good", None))
                continue
            mask_rel = (row["mask"] or "").strip()
            if not mask_rel:
                raise DatasetError(f"anomalous test image {image} has no mask in {csv_path} line {i}")
            mask = resolve(mask_rel, i)
            if not mask.is_file():
                raise DatasetError(f"mask for anomalous test image {image} not found: {mask}")
            test.append(TestSample(str(image), 1, "bad", str(mask)))
        else:
            raise DatasetError(f"{csv_path} line {i}: unknown split {row['split']!r}")
    if not train:
        raise DatasetError(f"no train images for visa/{category} in {csv_path}")
    train.sort()
    test.sort(key=lambda s: (s.defect, s.path))  # same order as the split layout
    return CategorySplit("visa", category, str(root), [str(p) for p in train], test)


def require_root(dataset: str, root: str | os.PathLike) -> Path:
    """``root`` as a Path; DatasetError unless it is a folder."""
    root_path = Path(root)
    if not root_path.is_dir():
        hint = (f" (`realnet {dataset}-data {root_path}` builds it; so does `realnet run`)"
                if dataset in ("demo", "dev") else "")
        raise DatasetError(f"dataset root for {dataset} not found: {root_path}{hint}")
    return root_path


def read_category(dataset: str, root: str | os.PathLike, category: str, strict: bool = True) -> CategorySplit:
    """List the train and test files of one category; raise ``DatasetError`` naming what is wrong.

    Files that break a rule (a missing mask, a dangling symlink, a link out of the root) are all
    reported together; with ``strict=False`` they are returned in ``split.problems`` instead, so that
    ``data check`` can go on checking the rest.
    """
    check_name(dataset, category)
    root_path = require_root(dataset, root)
    if dataset == "visa" and not (root_path / category / "train").is_dir():
        if (root_path / VISA_CSV).is_file():
            return _read_visa_csv(root_path, category)
        raise DatasetError(f"VisA root {root_path} has neither {root_path / category / 'train'} "
                           f"(split layout) nor {root_path / VISA_CSV} (raw release)")
    split = _read_folder_layout(dataset, root_path, category)
    if strict and len(split.problems) == 1:
        raise DatasetError(split.problems[0])
    if strict and split.problems:
        raise DatasetProblems(f"{dataset}/{category}", split.problems)
    return split
