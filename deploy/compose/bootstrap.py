"""One-shot set-up for compose.yaml's network agent, run by its ``bootstrap`` service before the
gateway and the agent start; it does nothing when its files exist already.

- a CA and a certificate for the gateway (``DNS:hoopgw``, the gateway's service name, which
  the agent dials): the gateway's certificate and key go to the gateway's volume, the CA
  certificate alone to the agent's;
- the gateway's password file for its PostgreSQL store (``PGPASSFILE``, read by libpq), from
  the ``store_password`` secret, readable by the gateway's user only (libpq ignores a password
  file others may read);
- the agent's registration (``hoopgw agents create``, run as the gateway's user so the store
  stays its own), whose token goes to the agent's volume, readable by that user only.

The paths, the agent's name and the user come from the environment (the test runs it on
temporary folders with its own user).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GATEWAY_TLS = Path(os.environ.get("HOOPGW_BOOTSTRAP_TLS", "/run/hoopgw-tls"))
AGENT_FILES = Path(os.environ.get("HOOPGW_BOOTSTRAP_AGENT", "/run/hoopgw-agent"))
CONFIG = os.environ.get("HOOPGW_BOOTSTRAP_CONFIG", "/etc/hoopgw/hoopgw.toml")
AGENT = os.environ.get("HOOPGW_BOOTSTRAP_AGENT_NAME", "site")
SERVER_NAME = os.environ.get("HOOPGW_BOOTSTRAP_SERVER_NAME", "hoopgw")
UID = int(os.environ.get("HOOPGW_BOOTSTRAP_UID", "10001"))
STORE_PASSWORD = Path(
    os.environ.get("HOOPGW_BOOTSTRAP_STORE_PASSWORD", "/run/secrets/store_password")
)
PGPASS = os.environ.get("PGPASSFILE", "")
STORE_HOST = os.environ.get("HOOPGW_BOOTSTRAP_STORE_HOST", "store:5432:hoopgw:hoopgw")
"""``host:port:database:user`` of the store's line in the password file."""
VALIDITY = datetime.timedelta(days=825)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    path.chmod(mode)
    if os.getuid() != UID:
        os.chown(path, UID, UID)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_certificates() -> None:
    """The CA and the gateway's certificate, unless the gateway's key exists."""
    if (GATEWAY_TLS / "gateway.key").exists():
        return
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hoopgw compose CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    # The CA's key is not kept: nothing else is ever signed with it.
    _write(AGENT_FILES / "ca.crt", ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(GATEWAY_TLS / "gateway.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(GATEWAY_TLS / "gateway.key", _pem(key), 0o600)


def write_store_password() -> None:
    """The store's password file (``PGPASSFILE``), from the secret, when both are named."""
    if not PGPASS or not STORE_PASSWORD.exists():
        return
    password = STORE_PASSWORD.read_text().rstrip("\n")
    # A password file escapes ':' and '\\' with a backslash.
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    _write(Path(PGPASS), f"{STORE_HOST}:{escaped}\n".encode(), 0o600)


def register_agent() -> None:
    """Register the agent with the gateway's store, unless its token exists."""
    token = AGENT_FILES / "agent.token"
    if token.exists():
        return

    def as_gateway_user() -> None:
        if os.getuid() != UID:
            os.setgid(UID)
            os.setuid(UID)

    created = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "hoopgw", "agents", "create", AGENT, "-c", CONFIG],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=as_gateway_user,  # one-shot, no threads: safe here
    )
    if created.returncode != 0:
        sys.exit(f"bootstrap: hoopgw agents create failed: {created.stderr.strip()}")
    _write(token, created.stdout.encode(), 0o600)


if __name__ == "__main__":
    make_certificates()
    write_store_password()
    register_agent()
    print(f"bootstrap: agent {AGENT!r} registered, gateway certificate for {SERVER_NAME!r}")
