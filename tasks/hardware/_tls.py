"""TLS for the edge: server and client contexts, the plain-text rule, and a self-signed pair.

The edge speaks TLS on every transport (HTTP, WebSocket, frame stream, command channel) when it
has a certificate and key; clients verify the edge's certificate against the system's CAs or a
CA file. Without TLS the edge serves only loopback (127.0.0.1, ::1, localhost) unless told
``--insecure``. `make_self_signed` writes a CA and an edge certificate signed by it (tests,
`scopeflow edge tls self-signed`, a facility without its own CA).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from scopeflow import ConfigurationError

__all__ = [
    "SelfSignedPair",
    "check_plaintext_allowed",
    "client_context",
    "is_loopback",
    "make_self_signed",
    "server_context",
]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) stays on this machine."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_plaintext_allowed(host: str, *, tls: bool, insecure: bool) -> None:
    """Refuse to serve ``host`` in plain text unless it is loopback or ``insecure`` is set."""
    if tls or insecure or is_loopback(host):
        return
    raise ConfigurationError(
        f"refusing to serve {host} without TLS: tokens and frames would cross the network in "
        "plain text. Give a certificate and key (--tls-cert edge.pem --tls-key edge.key; "
        "`scopeflow edge tls self-signed --host NAME --out DIR` makes a pair), bind 127.0.0.1, "
        "or pass --insecure on a network you trust"
    )


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context from PEM files; `ConfigurationError` naming the file that fails."""
    for path, what in ((cert, "--tls-cert"), (key, "--tls-key")):
        if not Path(path).is_file():
            raise ConfigurationError(f"{what} {path} does not exist; give the PEM file's path")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"cannot load the TLS certificate {cert} with key {key}: {exc}; they must be PEM "
            "files and the key must match the certificate"
        ) from exc
    return context


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or only ``ca_file`` when given."""
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigurationError(
            f"CA file {ca_file} does not exist; give the PEM of the CA that signed the edge's "
            "certificate"
        )
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


class SelfSignedPair:
    """Paths of what `make_self_signed` wrote: the CA certificate (give it to clients), the
    edge's certificate and its key (give them to `scopeflow edge serve`)."""

    def __init__(self, ca_cert: Path, cert: Path, key: Path) -> None:
        self.ca_cert, self.cert, self.key = ca_cert, cert, key


def make_self_signed(
    out_dir: Path, hosts: list[str] | None = None, *, days: int = 365
) -> SelfSignedPair:
    """Write ``ca.pem``, ``edge.pem`` and ``edge.key`` (mode 0600) into ``out_dir``: a CA and
    an edge certificate it signed, valid for ``hosts`` (default 127.0.0.1, ::1, localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hosts = hosts or ["127.0.0.1", "::1", "localhost"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    valid = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=days))

    ca_usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True,
        crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scopeflow edge CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pair = SelfSignedPair(out_dir / "ca.pem", out_dir / "edge.pem", out_dir / "edge.key")
    pair.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(pair.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    return pair
