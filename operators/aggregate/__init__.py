"""Window aggregation: mergeable per-key, per-window statistics over micro-batches.

- :mod:`.sketch`: :class:`QuantileSketch` (exact while small, <= 1% relative error
  beyond) and :class:`CategoryCounts`.
- :mod:`.accumulator`: :func:`slice_frame` cuts a micro-batch into per-key, per-pane
  :class:`Slice` summaries holding a :class:`WindowAccumulator`.
- :mod:`.rows`: the published ``metrics`` and ``metrics_late`` schemas and row builders.
"""

from driftline.operators.aggregate.accumulator import (
    Slice,
    WindowAccumulator,
    accumulate,
    align_origin,
    key_column,
    slice_frame,
    window_bounds,
)
from driftline.operators.aggregate.rows import (
    DRIFT_DTYPE,
    key_string,
    late_row,
    late_schema,
    metrics_row,
    metrics_schema,
    pipeline_version,
    rows_frame,
)
from driftline.operators.aggregate.sketch import OTHER, CategoryCounts, QuantileSketch

__all__ = [
    "OTHER",
    "DRIFT_DTYPE",
    "CategoryCounts",
    "QuantileSketch",
    "Slice",
    "WindowAccumulator",
    "accumulate",
    "align_origin",
    "key_column",
    "key_string",
    "late_row",
    "late_schema",
    "metrics_row",
    "metrics_schema",
    "pipeline_version",
    "rows_frame",
    "slice_frame",
    "window_bounds",
]
