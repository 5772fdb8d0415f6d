"""release_startup_pages: LLVM's code pages leave the resident set after the warm-up; the kernels still run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

MIB = 1 << 20


def test_llvm_pages_leave_the_resident_set_and_the_kernels_still_run() -> None:
    script = textwrap.dedent(
        """
        import json
        from cloudtap.agent.lean import _read_only_file_mappings, release_startup_pages
        from cloudtap.agent.warmup import _run_kernels, warm_up

        def rss_file():
            for line in open("/proc/self/status"):
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) * 1024

        warm_up(release_pages=False)
        chosen = _read_only_file_mappings(("libllvmlite",))
        perms = {}
        for line in open("/proc/self/maps"):
            span, mode = line.split()[:2]
            perms[int(span.split("-")[0], 16)] = mode
        before = rss_file()
        released = release_startup_pages()
        after = rss_file()
        _run_kernels()  # every kernel still runs (decode, filter, dedup, fragments, meter, IPFIX)
        print(json.dumps({"released": released, "drop": before - after, "again": rss_file() - after,
                          "modes": sorted({perms[start] for start, _, _ in chosen})}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["released"] > 20 * MIB and got["drop"] > 20 * MIB
    assert got["again"] < 4 * MIB  # running the loaded kernels does not bring LLVM back
    assert all("w" not in mode and mode.endswith("p") for mode in got["modes"]), got["modes"]


def test_nothing_to_release_is_not_an_error() -> None:
    from cloudtap.agent.lean import release_startup_pages

    assert release_startup_pages(("no-such-library-here",)) == 0
