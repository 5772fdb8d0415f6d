"""Byte copies of structured rows equal numpy's own copies and joins, field for field."""

from __future__ import annotations

import numpy as np
import pytest

from cloudtap.meter._state import EDGE_DELTA_DTYPE
from cloudtap.schema.flow import FLOW_DTYPE
from cloudtap.schema.rows import copy_rows, join_rows


def _random_rows(dtype: np.dtype, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, dtype)
    rows.view(np.uint8)[:] = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
    return rows


@pytest.mark.parametrize("dtype", [FLOW_DTYPE, EDGE_DELTA_DTYPE])
def test_join_rows_equals_numpy_concatenate(dtype: np.dtype) -> None:
    parts = [_random_rows(dtype, n, seed) for seed, n in enumerate((5, 0, 17, 1))]
    joined = join_rows(parts, dtype)
    expected = np.concatenate(parts)
    assert joined.dtype == dtype and joined.shape == expected.shape
    assert joined.tobytes() == b"".join(p.tobytes() for p in parts)  # padding too: a byte copy
    for name in dtype.names:  # field for field, not only the bytes
        np.testing.assert_array_equal(joined[name], expected[name])


def test_join_rows_of_nothing_is_an_empty_array_of_the_dtype() -> None:
    joined = join_rows([], FLOW_DTYPE)
    assert joined.dtype == FLOW_DTYPE and joined.shape == (0,)


def test_copy_rows_is_an_independent_copy_even_of_a_strided_view() -> None:
    rows = _random_rows(FLOW_DTYPE, 10, 7)
    copied = copy_rows(rows[::3])  # every third row: not contiguous
    for name in FLOW_DTYPE.names:
        np.testing.assert_array_equal(copied[name], rows[::3][name])
    copied["packets_c2s"] = 0
    assert (rows[::3]["packets_c2s"] == copy_rows(rows[::3])["packets_c2s"]).all()
    assert copy_rows(rows[:0]).shape == (0,)


def test_a_part_of_another_dtype_is_refused_not_reinterpreted() -> None:
    with pytest.raises(TypeError, match="expected"):
        join_rows([_random_rows(FLOW_DTYPE, 2, 1), _random_rows(EDGE_DELTA_DTYPE, 2, 2)], FLOW_DTYPE)
    with pytest.raises(TypeError, match="objects"):
        copy_rows(np.zeros(2, [("a", object)]))
