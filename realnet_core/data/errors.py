"""Error type raised by the dataset readers and checks.

Every message names the file, folder or category at fault, so that a user looking at a failed
pipeline run can go straight to the broken part of the dataset.
"""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset on disk is missing, malformed or inconsistent."""


class DatasetProblems(DatasetError):
    """Several problems found by one check, each naming its file; ``problems`` lists them all."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(f"{where}: {self.problems[0]}")
            return
        more = f"; and {len(self.problems) - 3} more" if len(self.problems) > 3 else ""
        super().__init__(f"{where}: {len(self.problems)} problems: {'; '.join(self.problems[:3])}{more}")
