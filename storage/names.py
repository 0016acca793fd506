"""Validation of the names that become path components under the artifact root.

Stage, dataset, category and key names are joined into paths and URLs, so anything that could
climb out of the root ('..', separators) or hide a folder from listings (a leading dot) is refused.
"""

from __future__ import annotations

import re

_SAFE = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def safe_name(value: str, what: str) -> str:
    """Return `value` unchanged if it is a safe single path component, else raise ValueError.

    Allowed: letters, digits, '_', '.', '-'; 1 to 100 characters; no leading dot (which also rules
    out '.' and '..', and keeps our own hidden '.tmp-'/'.lock-' siblings distinct from artifacts).
    """
    if not isinstance(value, str) or not _SAFE.fullmatch(value) or value.startswith("."):
        raise ValueError(
            f"invalid {what} name {value!r}: use 1-100 characters from [A-Za-z0-9_.-], not starting with '.'"
        )
    return value
