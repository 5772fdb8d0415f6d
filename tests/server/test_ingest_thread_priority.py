"""The ingest threads run nicer than the event loop (``ingest.thread_nice``), so heartbeats win a busy CPU."""

from __future__ import annotations

import os
import threading

import pytest

from cloudtap.server.coalesce import Coalescer, lower_thread_priority


def _own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_the_decode_and_insert_threads_run_nicer_than_the_caller() -> None:
    base = _own_priority()
    coalescer = Coalescer(ingestor=None, wait_s=0.05, thread_nice=5)  # type: ignore[arg-type]
    try:
        assert coalescer._executor.submit(_own_priority).result() == min(19, base + 5)
        assert coalescer._decoders.submit(_own_priority).result() == min(19, base + 5)
        assert _own_priority() == base  # only those threads: the event loop's thread keeps its priority
    finally:
        coalescer._executor.shutdown()
        coalescer._decoders.shutdown()


@pytest.mark.parametrize("nice", [0, -3])
def test_zero_or_less_leaves_the_priority_alone(nice: int) -> None:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: (lower_thread_priority(nice), seen.append(_own_priority())))
    base = _own_priority()
    thread.start()
    thread.join()
    assert seen == [base]
