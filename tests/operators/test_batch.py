"""operators/batch.py: arrays handed to Polars live in Arrow's own memory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from driftline.operators.batch import owned_array


def test_owned_array_copies_numpy_memory_that_pyarrow_would_wrap() -> None:
    values = np.arange(5, dtype=np.int64)
    assert pa.array(values).buffers()[1].address == values.ctypes.data  # what pyarrow does: no copy
    arr = owned_array(values, pa.int64(), mask=np.array([False, True, False, False, False]))
    assert arr.buffers()[1].address != values.ctypes.data
    assert arr.to_pylist() == [0, None, 2, 3, 4]
    assert owned_array([1, 2], pa.int32()).to_pylist() == [1, 2]

