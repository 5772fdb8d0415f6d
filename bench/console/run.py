"""Console speed on the demo's data: each page in Debian's Chromium against the same API calls made directly.

For every page: the time from navigation until its content is drawn (the page's own ``data-ready`` mark:
the first ``h1`` and no request in flight), every ``/api/`` request the page made (count, bytes, the
slowest), and, as the floor, the same requests replayed from Python with one keep-alive connection. The
ratio page / floor is what the console itself adds (bundle, rendering); the issue's targets are a first
screen under 1 s and every API call under 300 ms on the demo's data.

Usage: ``python bench/console/run.py [--dev out/console-dev] [--runs 3]`` (without ``--dev`` it starts the
demo stack itself, about a minute). Results: ``bench/results/console.json``.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PAGES = ["/panorama", "/incident", "/fleet", "/inventory", "/policies", "/diagnose", "/audit"]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]  # fmt: skip


def span() -> tuple[str, str]:
    from cloudtap.synth.scenario import builtin_scenario

    scn = builtin_scenario("seed-case")
    return f"{scn.start:%Y-%m-%dT%H:%M:%SZ}", f"{scn.start + timedelta(seconds=scn.duration):%Y-%m-%dT%H:%M:%SZ}"


def measure_page(page: Any, url: str) -> dict[str, Any]:
    """Load ``url`` fresh; when its content is drawn, and the API requests it made."""
    calls: list[dict[str, Any]] = []

    def done(request: Any) -> None:
        if "/api/" not in request.url:
            return
        timing = request.timing
        response = request.response()
        try:
            size = len(response.body()) if response is not None and response.ok else 0
        except Exception:  # noqa: BLE001 - the page navigated away first (a reload): its size is unknown
            size = 0
        calls.append({"method": request.method, "url": request.url, "body": request.post_data,
                      "ms": timing["responseEnd"], "bytes": size})  # fmt: skip

    page.on("requestfinished", done)
    started = time.perf_counter()
    page.goto(url)
    page.reload()
    page.locator("main h1").first.wait_for()
    page.wait_for_load_state("networkidle")
    drawn_ms = (time.perf_counter() - started) * 1000 - 500  # networkidle waits 500 ms of quiet
    page.remove_listener("requestfinished", done)
    return {"drawn_ms": drawn_ms, "calls": calls}


def floor(calls: list[dict[str, Any]], base: str, token: str, ca: Path) -> float:
    """The same API calls from Python, one after another (ms in all)."""
    context = ssl.create_default_context(cafile=str(ca))
    total = 0.0
    for call in calls:
        req = urllib.request.Request(call["url"], data=call["body"].encode() if call["body"] else None,
                                     method=call["method"], headers={"Authorization": f"Bearer {token}",
                                                                     "Content-Type": "application/json"})  # fmt: skip
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60, context=context) as resp:
                resp.read()
        except urllib.error.HTTPError:
            pass
        total += (time.perf_counter() - t) * 1000
    return total


def run(base: str, password: str, ca: Path, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    start, end = span()
    body = json.dumps({"username": "admin", "password": password, "name": "bench"}).encode()
    req = urllib.request.Request(base + "/api/v1/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca))) as resp:
        token = json.loads(resp.read())["token"]
    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
        page = context.new_page()
        page.goto(f"{base}/#/login")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/#/panorama**")
        for path in PAGES:
            samples = [measure_page(page, f"{base}/#{path}?from={start}&to={end}") for _ in range(runs)]
            best = min(samples, key=lambda s: s["drawn_ms"])
            floors = [floor(best["calls"], base, token, ca) for _ in range(runs)]
            api_ms = [c["ms"] for c in best["calls"]]
            out[path] = {
                "drawn_ms": round(best["drawn_ms"]), "api_calls": len(api_ms),
                "api_slowest_ms": round(max(api_ms, default=0)), "api_bytes": sum(c["bytes"] for c in best["calls"]),
                "floor_ms": round(min(floors)), "ratio_drawn_to_floor": round(best["drawn_ms"] / max(min(floors), 1), 2),
                "slowest_call": max(best["calls"], key=lambda c: c["ms"])["url"].split(base)[1] if best["calls"] else "",
            }  # fmt: skip
            print(f"{path:<11} drawn {out[path]['drawn_ms']:>5} ms  {len(api_ms)} API calls, slowest "
                  f"{out[path]['api_slowest_ms']:>4} ms, {out[path]['api_bytes'] / 1024:,.0f} KiB; same calls from "
                  f"Python {out[path]['floor_ms']} ms (x{out[path]['ratio_drawn_to_floor']})", flush=True)  # fmt: skip
        browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", type=Path, default=None, help="a running `python -m cloudtap.demo --out DIR --keep-running`")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "console.json")
    args = ap.parse_args()
    if args.dev:
        base = (args.dev / "server.url").read_text().strip()
        result = run(base, (args.dev / "admin-password").read_text().strip(), args.dev / "tls" / "ca.pem", args.runs)
    else:
        from cloudtap.demo.stack import demo_stack

        with demo_stack(Path(tempfile.mkdtemp(prefix="cloudtap-console-bench-")), "seed-case", 0) as stack:
            result = run(stack.url, stack.admin_password, stack.ca_file, args.runs)
    slowest = max(v["api_slowest_ms"] for v in result.values())
    first = result["/panorama"]["drawn_ms"]
    print(f"first screen (panorama) {first} ms (target < 1000); slowest API call {slowest} ms (target < 300)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "pages": result,
                                    "median_ratio": statistics.median(v["ratio_drawn_to_floor"] for v in result.values())},
                                   indent=2))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
