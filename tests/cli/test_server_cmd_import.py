"""`cloudtap import --server`: the batch goes out with the user's token; a refused token says to log in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudtap.cli.main import app

SEEN: list[dict[str, Any]] = []


class _Ingest(BaseHTTPRequestHandler):
    """POST /api/v1/ingest: 401 without ``Bearer good``, else stored."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        SEEN.append({"path": self.path, "auth": self.headers.get("Authorization")})
        ok = self.headers.get("Authorization") == "Bearer good"
        data = json.dumps(
            {"stored": True, "duplicate": False, "rows": {}} if ok else {"detail": "unknown token"}
        )
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data.encode())


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ingest)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cloudtap.synth import builtin_scenario, write_pcap
    from cloudtap.synth.scenario import with_overrides

    path = tmp_path_factory.mktemp("import") / "small.pcap"
    write_pcap(with_overrides(builtin_scenario("small-cloud"), duration="2s"), path)
    return path


def test_import_sends_the_token(url: str, capture: Path) -> None:
    done = CliRunner().invoke(app, ["import", str(capture), "--server", url, "--token", "good"])
    assert done.exit_code == 0, done.output
    assert SEEN[-1] == {"path": "/api/v1/ingest", "auth": "Bearer good"}
    refused = CliRunner().invoke(app, ["import", str(capture), "--server", url, "--token", "bad"])
    assert refused.exit_code == 1
    assert (
        "not logged in or the token expired (unknown token)" in refused.output
        and "cloudtap login" in refused.output
    )
    anonymous = CliRunner().invoke(app, ["import", str(capture), "--server", url])
    assert anonymous.exit_code == 1 and f"not logged in to {url}" in anonymous.output
    assert SEEN[-1]["auth"] is None
