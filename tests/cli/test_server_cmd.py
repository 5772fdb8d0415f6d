"""`cloudtap server certs` and `cloudtap server run` over HTTPS (a real server process on loopback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner, Result

from cloudtap.cli.server_cmd import server_app
from cloudtap.server.settings import ApiSection, load_server_settings
from cloudtap.tls import client_ssl_context

runner = CliRunner()
CLI = [sys.executable, "-m", "cloudtap.cli.main"]


def _said(result: Result) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA, server certificate for 127.0.0.1 and myserver.example, and an agent certificate, via the CLI."""
    out = tmp_path_factory.mktemp("certs")
    args = [
        "certs",
        "--out",
        str(out),
        "--host",
        "127.0.0.1",
        "--host",
        "myserver.example",
        "--agent",
        "hv-1",
    ]
    result = runner.invoke(server_app, args)
    assert result.exit_code == 0, result.output
    return out


def test_certs_writes_the_files_and_prints_the_config(certs: Path) -> None:
    names = {p.name for p in certs.iterdir()}
    assert names == {"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "hv-1.pem", "hv-1-key.pem"}
    result = runner.invoke(server_app, ["certs", "--out", str(certs), "--host", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    assert f"tls_cert: {certs / 'server.pem'}" in result.output
    assert f"tls_key: {certs / 'server-key.pem'}" in result.output
    assert f"SSL_CERT_FILE={certs / 'ca.pem'}" in result.output
    assert "existing CA reused" in result.output


def test_certs_keeps_an_existing_ca_and_refuses_half_of_one(tmp_path: Path) -> None:
    assert runner.invoke(server_app, ["certs", "--out", str(tmp_path), "--host", "a.example"]).exit_code == 0
    ca = (tmp_path / "ca.pem").read_bytes()
    assert runner.invoke(server_app, ["certs", "--out", str(tmp_path), "--host", "b.example"]).exit_code == 0
    assert (tmp_path / "ca.pem").read_bytes() == ca  # re-issuing the server certificate keeps the CA
    (tmp_path / "ca-key.pem").unlink()
    result = runner.invoke(server_app, ["certs", "--out", str(tmp_path), "--host", "a.example"])
    assert result.exit_code == 1 and "only one of" in _said(result)
    result = runner.invoke(server_app, ["certs", "--out", str(tmp_path / "x"), "--host", "not a host"])
    assert result.exit_code == 1 and "not an IP address or DNS name" in _said(result)


def test_tls_settings_go_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        ApiSection(tls_cert=Path("/etc/cloudtap/server.pem"))
    api = ApiSection(tls_cert=Path("c.pem"), tls_key=Path("k.pem"))
    assert api.tls and not ApiSection().tls
    env = {"CLOUDTAP_SERVER__API__TLS_KEY": "/k.pem"}
    with pytest.raises(Exception, match="api.*tls_cert and tls_key go together"):
        load_server_settings(env=env)


def test_run_refuses_half_a_tls_pair_and_unusable_files(certs: Path, tmp_path: Path) -> None:
    data = ["run", "--data", str(tmp_path / "data"), "--port", "0"]
    result = runner.invoke(server_app, [*data, "--tls-cert", str(certs / "server.pem")])
    assert result.exit_code == 1 and "tls_cert and tls_key go together" in _said(result)
    wrong_key = [*data, "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "hv-1-key.pem")]
    result = runner.invoke(server_app, wrong_key)
    assert result.exit_code == 1 and "unusable" in _said(result)
    missing = [*data, "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(certs / "server-key.pem")]
    result = runner.invoke(server_app, missing)
    assert result.exit_code == 1 and "does not exist" in _said(result)
    assert not (tmp_path / "data").exists()  # refused before the store was opened


@pytest.fixture
def https_server(certs: Path, tmp_path: Path) -> Iterator[str]:
    """`cloudtap server run` with the CLI's certificates; yields the URL of its status file."""
    status = tmp_path / "status"
    config = tmp_path / "server.yaml"
    config.write_text(f"api:\n  status_file: {status}\n  tls_cert: {certs / 'server.pem'}\n")
    env = {**os.environ, "CLOUDTAP_SERVER__API__TLS_KEY": str(certs / "server-key.pem")}
    cmd = [*CLI, "server", "run", "-c", str(config), "--data", str(tmp_path / "data"), "--port", "0"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (status.exists() and status.read_text().strip()):
            if proc.poll() is not None:
                raise AssertionError(
                    f"server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
                )
            assert time.monotonic() < deadline, "server did not write its status file"
            time.sleep(0.1)
        yield status.read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_run_serves_https(https_server: str, certs: Path) -> None:
    url = https_server
    assert url.startswith("https://127.0.0.1:")
    deadline = time.monotonic() + 30
    while True:  # the status file is written just before uvicorn starts accepting
        try:
            with httpx.Client(verify=client_ssl_context(certs / "ca.pem")) as client:
                resp = client.get(url + "/api/v1/health")
            break
        except httpx.ConnectError as exc:
            if "CERTIFICATE" in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        with httpx.Client(verify=client_ssl_context(None)) as client:
            client.get(url + "/api/v1/health")
    with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
        with httpx.Client(verify=client_ssl_context(certs / "ca.pem")) as client:
            client.get(url + "/api/v1/health", extensions={"sni_hostname": "wrong.example"})
