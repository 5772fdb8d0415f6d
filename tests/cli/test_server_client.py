"""ServerClient and the --server/--token/--ca resolution, against a small stand-in HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloudtap.cli.credentials import CredentialsFile, SavedLogin
from cloudtap.cli.errors import CliError
from cloudtap.cli.server_client import ServerClient, ServerError, is_loopback
from cloudtap.cli.server_options import Remote

SEEN: list[dict[str, Any]] = []


class _Handler(BaseHTTPRequestHandler):
    """Answers by path: /ok echoes, /401, /403, /422, /redirect, /blob streams 3 MiB."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        for k, v in {
            "Content-Type": "application/json",
            "Content-Length": str(len(data)),
            **(headers or {}),
        }.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        SEEN.append({"path": self.path, "method": self.command, "auth": self.headers.get("Authorization"),
                     "body": body, "type": self.headers.get("Content-Type")})  # fmt: skip
        path = self.path.split("?")[0]
        if path == "/ok":
            self._send(200, {"method": self.command, "query": self.path.partition("?")[2]})
        elif path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif path == "/401":
            self._send(401, {"detail": "API token abc expired"})
        elif path == "/403":
            self._send(403, {"detail": "bob lacks the users:manage permission"})
        elif path == "/422":
            self._send(
                422,
                {
                    "detail": [
                        {"loc": ["body", "level"], "msg": "bad level", "ctx": {"allowed": ["vm", "ip"]}}
                    ]
                },
            )
        elif path == "/redirect":
            self._send(302, {}, {"Location": "/ok"})
        elif path == "/blob":
            self.send_response(200)
            self.send_header("Content-Length", str(3 << 20))
            self.send_header("X-Cloudtap-Packets", "7")
            self.end_headers()
            self.wfile.write(b"x" * (3 << 20))
        else:
            self._send(404, {"detail": "Not Found"})

    do_GET = do_POST = do_PUT = do_DELETE = _handle


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_json_calls_send_the_token(url: str) -> None:
    client = ServerClient(url, "ct_a_b")
    assert client.get_json("/ok", {"x": 1, "skip": None}) == {"method": "GET", "query": "x=1"}
    assert SEEN[-1]["auth"] == "Bearer ct_a_b"
    assert client.post_json("/ok", {"a": 1})["method"] == "POST" and json.loads(SEEN[-1]["body"]) == {"a": 1}
    assert SEEN[-1]["type"] == "application/json"
    assert client.put_json("/ok", [1])["method"] == "PUT"
    assert client.delete_json("/empty") is None and SEEN[-1]["method"] == "DELETE"
    assert client.post_json("/ok")["method"] == "POST" and SEEN[-1]["body"] == b""
    raw = client.post_raw("/ok", b"\x01\x02", {"Content-Type": "application/octet-stream"})
    assert json.loads(raw)["method"] == "POST" and SEEN[-1]["type"] == "application/octet-stream"
    ServerClient(url).get_json("/ok")
    assert SEEN[-1]["auth"] is None


def test_refusals_are_one_clear_sentence(url: str) -> None:
    with pytest.raises(ServerError) as e:
        ServerClient(url).get_json("/401")
    assert e.value.status == 401 and str(e.value) == (
        f"not logged in to {url}: run `cloudtap login --server {url}` (or give --token / CLOUDTAP_TOKEN)")  # fmt: skip
    with pytest.raises(ServerError) as e:
        ServerClient(url, "ct_a_b").get_json("/401")
    assert (
        str(e.value)
        == f"not logged in or the token expired (API token abc expired): run `cloudtap login --server {url}`"
    )
    with pytest.raises(ServerError) as e:
        ServerClient(url, "t").get_json("/403")
    assert str(e.value) == "permission denied: bob lacks the users:manage permission" and e.value.code == 1
    with pytest.raises(ServerError) as e:
        ServerClient(url, "t").post_json("/422", {})
    assert str(e.value) == "level: bad level; allowed: vm, ip" and e.value.code == 2
    with pytest.raises(ServerError) as e:
        ServerClient(url, "t").get_json("/nowhere")
    assert e.value.code == 2 and "404" in str(e.value)


def test_redirects_are_not_followed(url: str) -> None:
    before = len(SEEN)
    with pytest.raises(ServerError, match="redirects to /ok: give that URL with --server"):
        ServerClient(url, "ct_a_b").get_json("/redirect")
    assert [s["path"] for s in SEEN[before:]] == ["/redirect"]  # the token went nowhere else


def test_stream_download(url: str) -> None:
    with ServerClient(url, "t").stream("POST", "/blob", {"vm": "x"}) as answer:
        assert answer.length == 3 << 20 and answer.headers["X-Cloudtap-Packets"] == "7"
        sizes = [len(c) for c in answer.chunks(1 << 20)]
    assert sum(sizes) == 3 << 20 and max(sizes) <= 1 << 20


def test_unreachable_and_bad_urls() -> None:
    with pytest.raises(
        ServerError, match=r"cannot reach http://127.0.0.1:9: .*\(is `cloudtap server run` up\?\)"
    ):
        ServerClient("http://127.0.0.1:9").get_json("/x")
    with pytest.raises(CliError, match="must start with http"):
        ServerClient("127.0.0.1:8470")
    with pytest.raises(CliError, match="no CA file"):
        ServerClient("https://127.0.0.1:9", ca_file="/nonexistent/ca.pem").get_json("/x")


def test_token_in_clear() -> None:
    assert ServerClient("http://10.0.0.5:8470", "t").token_in_clear
    assert not ServerClient("http://10.0.0.5:8470").token_in_clear
    assert not ServerClient("https://10.0.0.5:8470", "t").token_in_clear
    assert not ServerClient("http://127.0.0.1:8470", "t").token_in_clear
    assert (
        is_loopback("http://localhost:1")
        and is_loopback("http://[::1]:1")
        and not is_loopback("http://10.1.1.1")
    )


def test_remote_resolution(_private_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Remote().client().base == "http://127.0.0.1:8470" and Remote().client().token is None
    CredentialsFile().save(
        SavedLogin("https://ct.example:8470", "ct_saved_x", "saved", "alice", 2e9, "/etc/ca.pem")
    )
    saved = Remote().client()  # the last login's server, token and CA
    assert (saved.base, saved.token, saved.ca_file) == (
        "https://ct.example:8470",
        "ct_saved_x",
        Path("/etc/ca.pem"),
    )
    given = Remote("https://ct.example:8470/", "ct_given_y", Path("/other.pem")).client()
    assert (given.token, given.ca_file) == ("ct_given_y", Path("/other.pem"))
    other = Remote("http://127.0.0.1:1").client()
    assert other.token is None and other.ca_file is None
    assert Remote(None, "t").client(anonymous=True).token is None
