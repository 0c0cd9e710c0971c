"""Find, read, check and merge policy files."""

from __future__ import annotations

from typing import Mapping, Optional

from .policy import Policy


def load(explicit: Optional[str], environ: Mapping[str, str]) -> Policy:
    return Policy()
