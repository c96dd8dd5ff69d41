"""A private certificate authority for the workload tests, made with the openssl command.

Servers under test (an S3 server, PostgreSQL) present a certificate this CA signed, for
``127.0.0.1`` and ``localhost``; a client trusts it only when it is given the CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCertificate:
    """A server's certificate and key files, and the PEM of the CA that signed it."""

    cert: Path
    key: Path
    ca_pem: str


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def server_certificate(folder: Path, name: str = "server") -> ServerCertificate:
    """A new CA, and a certificate it signed for 127.0.0.1 and localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    extensions = folder / f"{name}.ext"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=mlops test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_cert),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(extensions),
        "-out",
        str(cert),
    )
    key.chmod(0o644)  # read by servers running as another user
    return ServerCertificate(cert=cert, key=key, ca_pem=ca_cert.read_text())
