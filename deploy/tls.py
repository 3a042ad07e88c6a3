"""A private certificate authority for loopback services, made with the openssl CLI.

The local stack's secured brokers and the tests need certificates that a real TLS
client verifies (CA chain, host name): one CA, and a server certificate for
``127.0.0.1`` and ``localhost`` signed by it. Production brings its own CA; the
broker config reads the same PEM files either way (``ssl.keystore.type=PEM``).
Keys are written 0600 and never printed.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.processes import require_tool, tail_text
from hallstats.errors import OperationalError

DAYS = 825  # the longest validity TLS clients still accept for a server certificate


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA's certificate (clients trust it), the server's key+chain."""

    ca_file: Path
    server_keystore: Path  # private key (PKCS#8) followed by its certificate chain
    server_cert: Path
    server_key: Path


def loopback_pki(folder: Path) -> Pki:
    """The CA and server certificate under ``folder``, made once and then reused."""
    pki = Pki(
        ca_file=folder / "ca.pem",
        server_keystore=folder / "server-keystore.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
    )
    if pki.server_keystore.is_file() and pki.ca_file.is_file():
        return pki
    openssl = require_tool("openssl", "certificates are made with openssl: apt-get install openssl")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca_key = folder / "ca-key.pem"
    csr = folder / "server.csr"
    extensions = folder / "server.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        encoding="utf-8",
    )
    _run(
        openssl,
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        str(ca_key),
    )
    _run(
        openssl,
        "req",
        "-x509",
        "-new",
        "-key",
        str(ca_key),
        "-sha256",
        "-days",
        str(DAYS),
        "-subj",
        "/CN=hallstats loopback CA",
        "-out",
        str(pki.ca_file),
    )
    _run(
        openssl,
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        str(pki.server_key),
    )
    _run(
        openssl,
        "req",
        "-new",
        "-key",
        str(pki.server_key),
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        str(csr),
    )
    _run(
        openssl,
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki.ca_file),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        str(DAYS),
        "-sha256",
        "-extfile",
        str(extensions),
        "-out",
        str(pki.server_cert),
    )
    keystore = pki.server_key.read_text() + pki.server_cert.read_text() + pki.ca_file.read_text()
    pki.server_keystore.write_text(keystore, encoding="utf-8")
    for path in (ca_key, pki.server_key, pki.server_keystore):
        os.chmod(path, 0o600)
    return pki


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise OperationalError(
            f"openssl {command[1]} failed (exit {result.returncode}): "
            f"{tail_text(result.stdout + result.stderr, 10)}"
        )
