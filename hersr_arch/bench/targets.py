"""The targets ``hersr bench`` checks, read from ``targets.json`` (data, not code: what the reports
hold the project to, per performance issue)."""

from __future__ import annotations

import json
from pathlib import Path


def load_targets() -> dict:
    """``{'bench': [{'target', 'kind', 'key', 'limit'}, ...], 'proxy': [[ours, peer], ...]}``."""
    return json.loads(Path(__file__).with_name("targets.json").read_text(encoding="utf-8"))
