"""Keep the agent process lean: libraries it never uses stay unloaded.

:func:`keep_pandas_out`: pyarrow imports pandas whenever it is installed (a dev or server venv;
``cloudtap[agent]`` does not pull it) on array conversions, ``to_numpy()`` and ``group_by()``,
only to recognise pandas inputs: +50 MiB resident and +300 modules the agent never uses.
"""

from __future__ import annotations

import importlib.abc
import sys


class _NoPandas(importlib.abc.MetaPathFinder):
    """An import hook under which ``import pandas`` (and its submodules) fails."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError(f"{name}: not loaded in the agent (cloudtap.agent.lean)")


def keep_pandas_out() -> bool:
    """Stop pyarrow from loading pandas in this process; returns whether the block is in place.

    For a process that is only an agent (``cloudtap agent run``, the footprint bench): an import hook
    makes ``import pandas`` fail for good, so pyarrow's array conversions, ``to_numpy()`` and
    ``group_by()`` (which load pandas whenever it is installed, to recognise pandas inputs) run
    without it. Does nothing when pandas is already loaded. Do not use it in a process that also
    needs pandas (e.g. chDB's result conversion).
    """
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())
    return True
