"""Fixtures of the Parquet sink tests (helpers live in parquet_helpers.py, next to this file)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from parquet_helpers import events_spec, run_info, window_spec  # noqa: E402, F401
