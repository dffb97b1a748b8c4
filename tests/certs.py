"""Certificates made in the test: a CA, a server certificate for 127.0.0.1/localhost, a client one."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey | None, **ext: object):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer if signer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if signer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if "san" in ext:
        builder = builder.add_extension(ext["san"], critical=False)  # type: ignore[arg-type]
    if "usage" in ext:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ext["usage"]]), critical=False)  # type: ignore[list-item]
    return key, builder.sign(signer or key, hashes.SHA256())


def _write(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate) -> None:
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> Pki:
    ca_key, ca = _issue("driftgate test CA", _name("driftgate test CA"), None)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    server_key, server = _issue(
        "localhost", ca.subject, ca_key, san=san, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_key, client = _issue("test client", ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    _write(directory / "ca", None, ca)
    _write(directory / "server", server_key, server)
    _write(directory / "client", client_key, client)
    return Pki(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
    )
