"""cloudtap._kernel_cache: a cached kernel is recompiled when a module it imports changes, not only its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cloudtap._kernel_cache import closure_stamp

KERNELS = textwrap.dedent(
    """
    from numba import njit

    from cloudtap._kernel_opts import KERNEL_OPTS
    from kcdemo.helpers import OFFSET, bump


    @njit(**KERNEL_OPTS)
    def answer(x):
        return bump(x) + OFFSET
    """
)
HELPERS = textwrap.dedent(
    """
    from numba import njit

    from cloudtap._kernel_opts import KERNEL_OPTS

    OFFSET = {offset}


    @njit(**KERNEL_OPTS)
    def bump(x):
        return x * {factor}
    """
)
RUN = textwrap.dedent(
    """
    import json
    from cloudtap import _kernel_cache

    _kernel_cache.PACKAGES.add("kcdemo")
    from kcdemo import kernels

    value = int(kernels.answer(10))
    print(json.dumps({"value": value, "hits": sum(kernels.answer.stats.cache_hits.values()),
                      "locator": type(kernels.answer._cache._impl.locator).__name__}))
    """
)


def _write_package(root: Path, factor: int, offset: int) -> None:
    pkg = root / "kcdemo"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "kernels.py").write_text(KERNELS)
    (pkg / "helpers.py").write_text(HELPERS.format(factor=factor, offset=offset))


def _run(root: Path) -> dict[str, object]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(root / "cache"), "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", RUN], capture_output=True, text=True, env=env, cwd=root, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_editing_an_imported_helper_recompiles_the_kernel_that_uses_it(tmp_path: Path) -> None:
    _write_package(tmp_path, factor=2, offset=1)
    first = _run(tmp_path)
    assert first == {"value": 21, "hits": 0, "locator": "KernelSourceLocator"}
    assert _run(tmp_path)["hits"] == 1  # unchanged sources: loaded from the cache
    _write_package(tmp_path, factor=3, offset=1)  # only the helper's code changes
    assert _run(tmp_path) == {"value": 31, "hits": 0, "locator": "KernelSourceLocator"}
    _write_package(tmp_path, factor=3, offset=5)  # only a constant the kernel reads changes
    assert _run(tmp_path)["value"] == 35


def test_the_stamp_covers_the_imported_modules_and_nothing_unrelated(tmp_path: Path) -> None:
    _write_package(tmp_path, factor=2, offset=1)
    (tmp_path / "kcdemo" / "unrelated.py").write_text("X = 1\n")
    from cloudtap import _kernel_cache

    _kernel_cache.PACKAGES.add("kcdemo")
    try:
        kernels = str(tmp_path / "kcdemo" / "kernels.py")
        before = closure_stamp(kernels, "kcdemo.kernels")
        (tmp_path / "kcdemo" / "unrelated.py").write_text("X = 2\n")
        assert closure_stamp(kernels, "kcdemo.kernels") == before
        _write_package(tmp_path, factor=2, offset=7)
        assert closure_stamp(kernels, "kcdemo.kernels") != before
        assert before[1] == "2"  # kernels.py and helpers.py (modules are followed within the kernel's root)
    finally:
        _kernel_cache.PACKAGES.discard("kcdemo")


def test_a_lazy_stamp_compares_and_pickles_as_its_tuple(tmp_path: Path) -> None:
    import pickle

    from cloudtap._kernel_cache import LazyStamp

    _write_package(tmp_path, factor=2, offset=1)
    kernels = str(tmp_path / "kcdemo" / "kernels.py")
    lazy = LazyStamp(kernels, "kcdemo.kernels")
    assert "not computed" in repr(lazy)  # nothing is read until numba compares or saves it
    plain = closure_stamp(kernels, "kcdemo.kernels")
    assert plain == lazy and not (plain != lazy) and lazy == LazyStamp(kernels, "kcdemo.kernels")
    restored = pickle.loads(pickle.dumps((lazy, "overloads")))
    assert restored == (plain, "overloads") and type(restored[0]) is tuple
