"""cloudtap.tls: CA and certificates as real TLS peers see them, through uvicorn serving HTTPS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from cloudtap.errors import ConfigError
from cloudtap.tls import CertFiles, client_ssl_context, make_ca, make_certificate

HOSTS = ["127.0.0.1", "myserver.example", "::1"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    """A CA, a server certificate for HOSTS, one for another host, and an agent's client certificate."""
    out = tmp_path_factory.mktemp("pki")
    return {
        "ca": make_ca(out),
        "server": make_certificate(out, out, "server", HOSTS),
        "elsewhere": make_certificate(out, out, "elsewhere", ["elsewhere.example"]),
        "agent": make_certificate(out, out, "hv-1", [], client=True),
    }


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_keys_and_modes(pki: dict[str, CertFiles]) -> None:
    ca = pki["ca"]
    assert (ca.cert.name, ca.key.name) == ("ca.pem", "ca-key.pem")
    assert (pki["server"].cert.name, pki["server"].key.name) == ("server.pem", "server-key.pem")
    for files in pki.values():
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(files.cert.stat().st_mode) == 0o644
        key = _load(files.cert).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert not list(ca.cert.parent.glob(".*.tmp"))  # no temporary file left behind
    cert = _load(ca.cert)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc >= dt.timedelta(days=3650)


def test_sans_and_key_usage(pki: dict[str, CertFiles]) -> None:
    server = _load(pki["server"].cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["myserver.example"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    agent = _load(pki["agent"].cert)
    assert list(agent.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert agent.subject.rfc4514_string() == "CN=hv-1"
    assert agent.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["hv-1"]


def test_chain_verifies_under_a_strict_rfc5280_policy(pki: dict[str, CertFiles]) -> None:
    store = Store([_load(pki["ca"].cert)])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("myserver.example"))
    chain = verifier.verify(_load(pki["server"].cert), [])
    assert chain[-1] == _load(pki["ca"].cert)
    ip_verifier = (
        PolicyBuilder().store(store).build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    ip_verifier.verify(_load(pki["server"].cert), [])
    client = PolicyBuilder().store(store).build_client_verifier()
    client.verify(_load(pki["agent"].cert), [])


def test_bad_inputs_are_config_errors(tmp_path: Path, pki: dict[str, CertFiles]) -> None:
    ca_dir = pki["ca"].cert.parent
    with pytest.raises(ConfigError, match="at least one host"):
        make_certificate(tmp_path, ca_dir, "server", [])
    with pytest.raises(ConfigError, match="not an IP address or DNS name"):
        make_certificate(tmp_path, ca_dir, "server", ["bad host!"])
    with pytest.raises(ConfigError, match="certificate name"):
        make_certificate(tmp_path, ca_dir, "../escape", ["a.example"])
    with pytest.raises(ConfigError, match="no CA in"):
        make_certificate(tmp_path, tmp_path / "none", "server", ["a.example"])
    with pytest.raises(ConfigError, match="cannot load the CA file"):
        client_ssl_context(tmp_path / "missing.pem")
    default = client_ssl_context(None)
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname


def test_a_new_certificate_replaces_the_old_one(tmp_path: Path) -> None:
    make_ca(tmp_path)
    first = _load(make_certificate(tmp_path, tmp_path, "server", ["a.example"]).cert)
    second = _load(make_certificate(tmp_path, tmp_path, "server", ["b.example"]).cert)
    assert first.serial_number != second.serial_number
    assert _load(tmp_path / "server.pem") == second


@contextmanager
def serve_https(files: CertFiles) -> Iterator[str]:
    """uvicorn serving /api/v1/health over HTTPS on a pre-bound loopback socket (as `server run` does)."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/api/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", ssl_certfile=files.cert, ssl_keyfile=files.key)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _get(url: str, verify: ssl.SSLContext, sni: str | None = None) -> httpx.Response:
    """One request on a fresh connection (a pooled one would skip the handshake under test)."""
    with httpx.Client(verify=verify) as client:
        return client.get(url + "/api/v1/health", extensions={"sni_hostname": sni} if sni else {})


def test_https_with_the_ca_reaches_health(pki: dict[str, CertFiles]) -> None:
    ctx = client_ssl_context(pki["ca"].cert)
    with serve_https(pki["server"]) as url:
        assert _get(url, ctx).json() == {"status": "ok"}
        # the DNS name in the certificate verifies too (SNI and the hostname check use it)
        assert _get(url, ctx, sni="myserver.example").is_success
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch|doesn't match"):
            _get(url, ctx, sni="other.example")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            _get(url, client_ssl_context(None))  # system trust store: our CA is not in it
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url.replace("https://", "http://") + "/api/v1/health")  # no plain HTTP on it


def test_a_certificate_for_another_host_fails_hostname_verification(pki: dict[str, CertFiles]) -> None:
    with serve_https(pki["elsewhere"]) as url:
        with pytest.raises(httpx.ConnectError, match="IP address mismatch"):
            _get(url, client_ssl_context(pki["ca"].cert))
