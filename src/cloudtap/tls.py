"""TLS for the API: a small private CA, server and client certificates, and client SSL contexts.

``make_ca`` and ``make_certificate`` write PEM files for a lab or a private cloud without a PKI
(``cloudtap server certs``); they need the ``cryptography`` package (server extra), imported only when
called. ``client_ssl_context`` needs only Python's ``ssl``: agents and CLI clients use it to trust the
server. This module imports nothing from ``cloudtap.server`` or ``cloudtap.agent``.

Files: ``ca.pem`` + ``ca-key.pem`` for the CA, ``<name>.pem`` + ``<name>-key.pem`` per certificate;
keys are ECDSA P-256, PKCS#8, unencrypted, mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloudtap.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SKEW = dt.timedelta(minutes=5)  #: certificates are valid from a little before now (clock skew)


@dataclass(frozen=True)
class CertFiles:
    """Where a certificate and its private key were written."""

    cert: Path
    key: Path


def make_ca(directory: str | Path, name: str = "cloudtap lab CA", days: int = 3650) -> CertFiles:
    """Create a self-signed CA in ``directory`` (``ca.pem``, ``ca-key.pem``), replacing any there."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write_pair(out / CA_CERT, out / CA_KEY, cert, key)


def make_certificate(
    directory: str | Path,
    ca_dir: str | Path,
    name: str,
    hosts: list[str],
    days: int = 825,
    client: bool = False,
) -> CertFiles:
    """Issue ``<name>.pem`` + ``<name>-key.pem`` in ``directory``, signed by the CA in ``ca_dir``.

    Args:
        name: file name stem and common name (letters, digits, ``.``, ``_``, ``-``).
        hosts: subject alternative names: IP addresses become IPAddress SANs, anything else DNS
            names. A server certificate needs at least one; a client certificate without hosts
            gets ``DNS:<name>``.
        client: extended key usage clientAuth (an agent's identity) instead of serverAuth.

    Raises:
        ConfigError: a bad name or host, no host for a server certificate, or no CA in ``ca_dir``.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not _NAME.match(name) or name in ("ca", "ca-key"):
        raise ConfigError(f"certificate name {name!r}: use letters, digits, '.', '_', '-' (not 'ca')")
    if not hosts and not client:
        raise ConfigError("a server certificate needs at least one host name or IP address")
    sans = [_san(h) for h in hosts] or [x509.DNSName(name.lower())]  # RFC 5280 verifiers want a SAN
    ca_cert, ca_key = _load_ca(Path(ca_dir))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return _write_pair(out / f"{name}.pem", out / f"{name}-key.pem", cert, key)


def client_ssl_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the server (and its host name) against ``ca_file``.

    ``None``: the system's default trust store. Raises ConfigError when ``ca_file`` cannot be loaded.
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {ca_file}: {exc}") from exc


def _key_usage(ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    from cryptography import x509

    text = host.strip().strip("[]")
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    if not text or not all(
        re.fullmatch(r"(\*|[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)", p) for p in labels
    ):
        raise ConfigError(f"not an IP address or DNS name: {host!r}")
    return x509.DNSName(text.rstrip(".").lower())


def _load_ca(ca_dir: Path) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(
            f"no CA in {ca_dir} ({exc.strerror}: {exc.filename}); create it with make_ca"
        ) from exc
    return cert, key


def _write_pair(cert_path: Path, key_path: Path, cert: Any, key: Any) -> CertFiles:
    from cryptography.hazmat.primitives import serialization

    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(key_path, key_pem, 0o600)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return CertFiles(cert_path, key_path)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a fresh file created with ``mode`` (never wider, even for a moment) and rename it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)  # the umask may have narrowed it; never widens a key beyond 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["CA_CERT", "CA_KEY", "CertFiles", "client_ssl_context", "make_ca", "make_certificate"]
