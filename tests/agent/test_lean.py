"""keep_pandas_out: pyarrow conversions in an agent process never load pandas."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


def test_pyarrow_paths_of_the_agent_run_without_pandas() -> None:
    pytest.importorskip("pandas")  # only a venv with pandas installed can show the difference
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, pyarrow as pa
        from cloudtap.agent.lean import keep_pandas_out
        first = keep_pandas_out()
        t = pa.table({"a": np.arange(4, dtype=np.uint16), "b": np.ones(4, np.uint64)})
        col = t["a"].to_numpy()
        g = t.group_by(["a"], use_threads=False).aggregate([("b", "sum")])
        try:
            import pandas
            blocked = False
        except ImportError:
            blocked = True
        print(json.dumps({"first": first, "again": keep_pandas_out(), "pandas": "pandas" in sys.modules,
                          "blocked": blocked, "col": col.tolist(), "groups": g.num_rows}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"first": True, "again": True, "pandas": False, "blocked": True, "col": [0, 1, 2, 3], "groups": 4}


def test_does_nothing_once_pandas_is_loaded() -> None:
    pytest.importorskip("pandas")
    from cloudtap.agent.lean import _NoPandas, keep_pandas_out

    assert keep_pandas_out() is False
    assert not any(isinstance(f, _NoPandas) for f in sys.meta_path)
