"""cloudtap._kernel_opts: cached kernels load without numba's compiler registries; compiling still works after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

KERNELS = textwrap.dedent(
    """
    import numpy as np
    from numba import njit

    from cloudtap._kernel_opts import KERNEL_OPTS

    REC = np.dtype([("a", "u8"), ("b", "f8")], align=True)


    @njit(**KERNEL_OPTS)
    def _scale(x, k):
        return x * k


    @njit(**KERNEL_OPTS)
    def summed(recs):
        out = np.empty(recs.shape[0], dtype=np.float64)  # allocates: needs the runtime (NRT)
        for i in range(recs.shape[0]):
            out[i] = _scale(recs[i]["b"], 2.0) + recs[i]["a"]
        return out
    """
)

RUN = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import kernels_under_test as k

    recs = np.zeros(3, k.REC)
    recs["a"] = [1, 2, 3]
    recs["b"] = [0.5, 1.5, 2.5]
    from numba.core.runtime import nrt

    first = k.summed(recs).tolist()
    runtime = nrt.rtsys._init  # summed allocates: its code links against the runtime
    registries = "numba.np.linalg" in sys.modules
    hits = sum(k.summed.stats.cache_hits.values())

    from numba import njit  # a kernel never cached: compiled in this process, after the cached load

    @njit
    def fresh(x):
        return np.median(x) + np.sort(x)[0]  # numba.np.arraymath: a registry the cached load skipped

    print(json.dumps({"values": first, "hits": hits, "registries_loaded_by_cache": registries, "runtime": runtime,
                      "fresh": float(fresh(np.array([4.0, 3.0, 8.0])))}))
    """
)


def run(tmp_path: Path) -> dict[str, object]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", RUN], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_cached_kernels_load_directly_and_compiling_still_works(tmp_path: Path) -> None:
    (tmp_path / "kernels_under_test.py").write_text(KERNELS)
    compiled = run(tmp_path)  # compiles and writes the cache
    assert compiled["hits"] == 0
    loaded = run(tmp_path)
    assert loaded["hits"] == 1
    assert loaded["values"] == compiled["values"] == [2.0, 5.0, 8.0]
    assert loaded["registries_loaded_by_cache"] is False  # what the direct load saves
    assert loaded["runtime"] is True
    assert loaded["fresh"] == compiled["fresh"] == 7.0


def test_installed_once() -> None:
    from numba.core import caching

    from cloudtap._kernel_opts import load_cached_kernels_directly

    patched = caching.Cache.load_overload
    assert load_cached_kernels_directly()
    assert caching.Cache.load_overload is patched
    assert getattr(patched, "cloudtap_direct", False)


METER = textwrap.dedent(
    """
    import json, sys
    from numba.core.runtime import nrt
    from cloudtap.meter import meter_file

    result = meter_file(sys.argv[1])
    print(json.dumps({"records": len(result.flows), "runtime": nrt.rtsys._init}))
    """
)


def test_metering_from_the_cache_never_sets_up_numbas_runtime(shared_pcaps: Path) -> None:
    """The metering kernels never allocate (``NO_ALLOC_OPTS``): their cached code loads without NRT (~14 ms)."""
    pcap = shared_pcaps / "PcapPlusPlus/Tests/Pcap++Test/PcapExamples/one_tcp_stream.pcap"
    env = {
        **os.environ,
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(Path.cwd() / ".numba-cache")),
    }
    for _ in range(2):  # the first run may compile into an empty cache (compiling sets the runtime up)
        done = subprocess.run(
            [sys.executable, "-c", METER, str(pcap)], capture_output=True, text=True, env=env, timeout=600
        )
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"records": 1, "runtime": False}


def test_the_runtime_is_set_up_for_object_code_that_names_it_or_when_in_doubt() -> None:
    from cloudtap._kernel_opts import needs_runtime

    elf = b"\x7fELF" + b"\x00" * 60
    assert (
        needs_runtime(
            ("k", "object", (elf + b"PyArg_UnpackTuple\x00", b"BC")),
        )
        is False
    )
    assert needs_runtime(("k", "object", (elf + b"NRT_decref\x00", b"BC"))) is True
    assert needs_runtime(("k", "object", (elf, b"@.numba.unresolved$f = global"))) is True
    assert needs_runtime(("k", "bitcode", b"BC\xc0\xde")) is True  # no object code recognised: set it up
