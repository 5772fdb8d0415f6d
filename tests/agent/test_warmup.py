"""warm_up: cache-only load first; a cache miss compiles in a child process, not here."""

from __future__ import annotations

import pytest
from numba import njit

from cloudtap.agent import warmup


def test_refuse_compiling_raises_before_a_compile_and_only_inside() -> None:
    @njit(cache=False)
    def plus_one(x: int) -> int:
        return x + 1

    with pytest.raises(warmup._CacheMiss), warmup._refuse_compiling():
        plus_one(1)
    assert plus_one(1) == 2  # outside the context it compiles as usual


def test_a_cache_miss_compiles_in_a_child_then_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    @njit(cache=False)
    def times_two(x: int) -> int:
        return 2 * x

    def run() -> None:
        calls.append("run")
        assert times_two(21) == 42

    monkeypatch.setattr(warmup, "_run_kernels", run)
    monkeypatch.setattr(warmup, "_compile_in_child", lambda: calls.append("child") or True)
    assert warmup.warm_up() >= 0
    assert calls == ["run", "child", "run"]  # refused, compiled elsewhere, loaded
    calls.clear()
    warmup.warm_up()  # now everything is loaded: no child
    assert calls == ["run"]


def test_warm_up_loads_the_real_kernels_without_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    warmup.warm_up(compile_in_child=False)  # fills the cache if this checkout has none yet
    monkeypatch.setattr(warmup, "_compile_in_child", lambda: pytest.fail("cache miss after a warm-up"))
    assert warmup.warm_up() < 60
