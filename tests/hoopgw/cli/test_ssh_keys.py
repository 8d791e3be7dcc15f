"""Tests for hoopgw.cli.ssh_keys: registering SSH public keys, against a real SQLite store."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from hoopgw.cli.main import main
from hoopgw.cli.ssh_keys import parse_public_key

CONFIG = """
[gateway]
store = "sqlite:///./audit.db"
"""


def _public_line(comment: str = "robot@ci") -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}".strip()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hoopgw.toml"
    path.write_text(CONFIG)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_public_key_fingerprint_matches_openssh() -> None:
    line = _public_line()
    fingerprint, public_key, comment = parse_public_key(line + "\n")
    blob = base64.b64decode(line.split()[1])
    import hashlib

    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert fingerprint == f"SHA256:{digest}"
    assert public_key == " ".join(line.split()[:2])
    assert comment == "robot@ci"


@pytest.mark.parametrize(
    "line", ["", "ssh-ed25519", "ssh-ed25519 !!!notbase64", "ssh-ed25519 AAAA", "ssh-foo AAAAB3Nz"]
)
def test_parse_public_key_refuses(line: str) -> None:
    with pytest.raises(ValueError):
        parse_public_key(line)


def test_add_list_revoke(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    public = tmp_path / "id.pub"
    public.write_text(_public_line() + "\n")
    args = ("keys", "add-ssh", "-c", config_file, "--identity", "robot", "--group", "agents")
    code, out, err = run(capsys, *args, "--group", "ops", "--public-key", public)
    assert code == 0, err
    fingerprint = out.strip()
    assert fingerprint.startswith("SHA256:")
    assert "registered SSH key" in err

    code, _, err = run(capsys, *args, "--public-key", public)
    assert code == 1 and "registered already" in err

    code, out, _ = run(capsys, "keys", "list-ssh", "-c", config_file, "--json")
    [listed] = json.loads(out)
    assert listed["fingerprint"] == fingerprint
    assert listed["groups"] == ["agents", "ops"]
    assert listed["comment"] == "robot@ci"
    assert listed["revoked_at"] is None
    code, out, _ = run(capsys, "keys", "list-ssh", "-c", config_file)
    assert fingerprint in out and "FINGERPRINT" in out

    assert run(capsys, "keys", "revoke-ssh", "-c", config_file, fingerprint)[0] == 0
    code, _, err = run(capsys, "keys", "revoke-ssh", "-c", config_file, fingerprint)
    assert code == 1 and "no active SSH key" in err


@pytest.mark.parametrize(
    ("content", "identity", "message"),
    [
        (None, "robot", "cannot read"),
        ("", "robot", "exactly one key line"),
        ("ssh-ed25519 AAAA x\nssh-ed25519 AAAA y\n", "robot", "exactly one key line"),
        ("garbage\n", "robot", "KEY-TYPE BASE64"),
        ("VALID", "bad name", "must be printable"),
    ],
)
def test_add_refuses(
    capsys: pytest.CaptureFixture[str],
    config_file: Path,
    tmp_path: Path,
    content: str | None,
    identity: str,
    message: str,
) -> None:
    public = tmp_path / "id.pub"
    if content is not None:
        public.write_text(_public_line() if content == "VALID" else content)
    code, _, err = run(
        capsys,
        "keys",
        "add-ssh",
        "-c",
        config_file,
        "--identity",
        identity,
        "--group",
        "agents",
        "--public-key",
        public,
    )
    assert code == 2
    assert message in err


def test_add_refuses_a_name_reserved_for_an_issuers_tokens(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{"kty": "EC", "kid": "k"}]}))
    with config_file.open("a") as f:
        f.write(
            '[[identity.oidc]]\nissuer = "urn:corp"\naudience = "hoopgw"\n'
            'jwks_file = "jwks.json"\nidentity_prefix = "corp:"\n'
        )
    public = tmp_path / "id.pub"
    public.write_text(_public_line() + "\n")
    args = ("keys", "add-ssh", "-c", config_file, "--group", "agents", "--public-key", public)
    code, out, err = run(capsys, *args, "--identity", "corp:robot")
    assert code == 2 and out == ""
    assert "reserved for an issuer's tokens" in err
    assert run(capsys, *args, "--identity", "robot")[0] == 0


def _openssh_line(public_key: object) -> str:
    line = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return f"{line.decode()} weak@old"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: dsa.generate_private_key(1024).public_key(),
            "DSA (ssh-dss) keys are refused",
        ),
        (
            lambda: rsa.generate_private_key(65537, 1024).public_key(),
            "RSA key of 1024 bits is refused: at least 2048 bits are required",
        ),
        (
            lambda: rsa.generate_private_key(65537, 2047).public_key(),
            "RSA key of 2047 bits is refused",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:SSH DSA key")
def test_weak_keys_are_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path, make: Any, message: str
) -> None:
    public = tmp_path / "id.pub"
    public.write_text(_openssh_line(make()))
    code, out, err = run(
        capsys,
        "keys",
        "add-ssh",
        "-c",
        config_file,
        "--identity",
        "robot",
        "--group",
        "agents",
        "--public-key",
        public,
    )
    assert code == 2
    assert message in err
    assert out == ""
    assert run(capsys, "keys", "list-ssh", "-c", config_file, "--json")[1].strip() == "[]"


@pytest.mark.parametrize(
    "make",
    [
        lambda: rsa.generate_private_key(65537, 2048).public_key(),
        lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),
        lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
        lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
    ],
)
def test_strong_keys_are_accepted(make: Any) -> None:
    line = _openssh_line(make())
    fingerprint, public_key, comment = parse_public_key(line)
    assert fingerprint.startswith("SHA256:")
    assert public_key == " ".join(line.split()[:2])
    assert comment == "weak@old"
