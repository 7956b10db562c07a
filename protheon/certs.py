"""``protheon certs``: a private CA, the master's TLS certificate and the shared token.

For local use and small labs; deployments make the same files with Ansible (community.crypto).
Workers need only ``ca.pem`` (to know the master) and ``token`` (to be let in); ``ca.key``
never has to leave the machine that issues certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protheon.config import ConfigError

CA_CERT, CA_KEY = "ca.pem", "ca.key"
MASTER_CERT, MASTER_KEY = "master.pem", "master.key"
TOKEN = "token"
VALID_DAYS = 3650
_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip
_SERVER_AUTH = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])


def make_certs(folder: Path, hosts: Iterable[str] = ()) -> list[Path]:
    """Create what is missing in ``folder``; return the files written. Existing files are kept,
    so re-running never locks out workers that already hold the CA and the token."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    written: list[Path] = []
    if not (folder / CA_KEY).exists() and not (folder / CA_CERT).exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Protheon private CA")])
        ca_cert = (
            _builder(name, name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        written += [_write_key(folder / CA_KEY, ca_key), _write_cert(folder / CA_CERT, ca_cert)]
    if not (folder / MASTER_KEY).exists() or not (folder / MASTER_CERT).exists():
        if not (folder / CA_KEY).exists():
            raise ConfigError(
                f"{folder / CA_KEY} is missing: the master's certificate must be signed by the"
                " CA the workers trust (copy ca.key back, or start a new folder)"
            )
        issuer_key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), None)
        assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        names = _subject_alt_names(["localhost", "127.0.0.1", "::1", socket.getfqdn(),
                                    socket.gethostname(), *hosts])  # fmt: skip
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "protheon master")])
        cert = (
            _builder(subject, ca_cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_SERVER_AUTH, critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        written += [_write_key(folder / MASTER_KEY, key), _write_cert(folder / MASTER_CERT, cert)]
    if not (folder / TOKEN).exists():
        written.append(_write_private(folder / TOKEN, secrets.token_urlsafe(32).encode() + b"\n"))
    return written


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
             ) -> x509.CertificateBuilder:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _subject_alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    return _write_private(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path
