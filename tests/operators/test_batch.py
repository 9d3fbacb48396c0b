"""operators/batch.py: arrays handed to Polars live in Arrow's own memory; lazy queries name their engine."""

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


def test_every_lazy_query_of_the_operators_sinks_and_flows_names_its_engine() -> None:
    """``collect`` and ``collect_all`` in operators/, sinks/ and flows/ pass ``engine=``
    (:data:`~driftline.operators.batch.ENGINE`): Polars' default may pick its streaming
    engine, which costs micro-batches more CPU than it gains."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = []
    for folder in ("operators", "sinks", "flows"):
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("collect", "collect_all"):
                    calls.append((f"{path.relative_to(root)}:{node.lineno}", any(k.arg == "engine" for k in node.keywords)))
    assert len(calls) >= 5, calls  # the PII engine's, the spans' and the windows' queries are found
    assert [where for where, named in calls if not named] == []
