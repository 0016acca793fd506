"""Error type raised by the dataset readers and checks.

Every message names the file, folder or category at fault, so that a user looking at a failed
pipeline run can go straight to the broken part of the dataset.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset on disk is missing, malformed or inconsistent."""
