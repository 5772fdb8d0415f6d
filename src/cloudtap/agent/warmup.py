"""Load every numba kernel from the cache before the first packet arrives; compile in a child if needed.

Compiling keeps its memory: a process that compiled the kernels stays ~200 MiB larger (LLVM's and
numba's compiler state, ~390 MiB instead of ~180 MiB) than one that only loaded them from numba's
cache. A fresh install or checkout has no (valid) cache: numba keys it on each source file's path
and mtime. So :func:`warm_up` first tries a cache-only load; on the first cache miss it compiles in
a short-lived child process, which fills the cache and exits, then loads from the cache.

LLVM runs only while the kernels load: once they are, :func:`warm_up` lets go of the ~67 MiB of LLVM
code pages the loading mapped (:func:`cloudtap.agent.lean.release_startup_pages`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from cloudtap.agent.lean import release_startup_pages
from cloudtap.capture.frames import FrameBatch

log = logging.getLogger(__name__)

#: Longest a child may take to compile every kernel (a cold compile takes ~20 s on 2 cores).
COMPILE_TIMEOUT_S = 900.0
_CHILD = "from cloudtap.agent.warmup import warm_up; warm_up(compile_in_child=False)"


class _CacheMiss(Exception):
    """A kernel is not in numba's cache (raised before it compiles)."""


def _refuse_compiling() -> Any:
    """A context under which a numba cache miss raises :class:`_CacheMiss` instead of compiling."""
    from numba.core import event

    class Refuse(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            raise _CacheMiss(str(ev.data.get("dispatcher", "")) if isinstance(ev.data, dict) else "")

        def on_end(self, ev: event.Event) -> None:
            pass

    return event.install_listener("numba:compile", Refuse())


def _compile_in_child() -> bool:
    """Compile every kernel into the cache in a child process; returns whether it succeeded."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD], env=dict(os.environ), capture_output=True, text=True,
            timeout=COMPILE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("compiling the kernels in a child process failed (%s): compiling here", exc)
        return False
    if done.returncode != 0:
        log.warning("compiling the kernels in a child process failed: %s", done.stderr.strip()[-500:])
        return False
    return True


def _run_kernels() -> None:
    """Run every per-packet kernel the agent uses on a one-packet batch."""
    from cloudtap.capture.bpf import FrameFilter
    from cloudtap.decode import FragmentTracker, decode_frames
    from cloudtap.decode.dedup import Deduplicator
    from cloudtap.meter import Meter, MeterConfig

    frame = bytes.fromhex(
        "ffffffffffff0200000000010800"  # Ethernet
        "45000028000100004006f9c80a0000010a000002"  # IPv4 10.0.0.1 -> 10.0.0.2, TCP
        "d431005000000001000000005002ffff00000000"  # TCP SYN-less segment
    )
    data = np.frombuffer(frame, np.uint8).copy()
    batch = FrameBatch(
        data=data,
        offset=np.zeros(1, np.int64),
        cap_len=np.array([len(frame)], np.uint32),
        wire_len=np.array([len(frame)], np.uint32),
        ts_ns=np.array([time.time_ns()], np.int64),
        linktype=np.ones(1, np.uint16),
        interface=np.zeros(1, np.uint16),
    )
    FrameFilter("tcp").mask(batch)
    packets = decode_frames(batch)
    Deduplicator(capacity=16).mask(batch, packets)
    FragmentTracker(capacity=16).associate(packets)
    # 17 flows in a table of 16 slots: the table doubles once, which loads the index rebuild too (else the
    # agent's first doubling would load it mid-capture, ~10 MiB of LLVM pages with it).
    flows = np.repeat(packets, 17)
    flows["sport"] += np.arange(17, dtype=np.uint16)
    meter = Meter(MeterConfig(max_flows=32, initial_flows=16, output_batch=64))
    meter.add(flows)
    meter.tick(time.time_ns() + 10**9)
    meter.flush()
    from cloudtap.ship.ipfix.encoder import warm_up_kernel

    warm_up_kernel()  # IPFIX export (output.ipfix)


def warm_up(*, compile_in_child: bool = True, release_pages: bool = True) -> float:
    """Load (or compile) every per-packet kernel the agent uses; returns seconds spent.

    Args:
        compile_in_child: on a cache miss, compile in a child process and load the result here
            (keeps this process ~200 MiB smaller). False compiles here (what the child does).
        release_pages: with ``compile_in_child``, let go of LLVM's code pages once the kernels are
            loaded (they fault back in if LLVM runs again; see :func:`release_startup_pages`).
    """
    started = time.perf_counter()
    if compile_in_child:
        try:
            with _refuse_compiling():
                _run_kernels()
        except _CacheMiss as miss:
            log.info("numba cache miss (%s): compiling the kernels in a child process", miss)
            _compile_in_child()
            _run_kernels()  # loads what the child cached; compiles here only what it could not cache
        if release_pages:
            released = release_startup_pages()
            log.debug("warm-up: %.0f MiB of LLVM code pages released", released / 2**20)
        return time.perf_counter() - started
    _run_kernels()
    return time.perf_counter() - started
