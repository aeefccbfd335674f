"""The bench's own logic (bounds, recorded figures) is tested here; the bench scripts import each other as
top-level modules from ``bench/``, so that folder goes on ``sys.path`` as the scripts themselves have it."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
