import os
from pathlib import Path

import pytest

from hoopgw.errors import ConfigError, SecretError
from hoopgw.runtime import logs
from hoopgw.secrets import Secret, resolve_secret


@pytest.fixture(autouse=True)
def empty_redaction_registry(monkeypatch):
    monkeypatch.setattr(logs, "_secrets", ())


def resolve(reference: str, base_dir: Path = Path("/nonexistent")) -> Secret:
    return resolve_secret(reference, key="credential.password", connection="pg", base_dir=base_dir)


def test_secret_shows_its_reference_never_its_value():
    secret = Secret(reference="env:PGPASSWORD", value="hunter2")

    assert repr(secret) == "Secret('env:PGPASSWORD')"
    assert str(secret) == "Secret('env:PGPASSWORD')"
    assert "hunter2" not in repr([secret])
    assert secret.reveal() == "hunter2"


def test_env_reference_resolves_and_registers_for_redaction(monkeypatch):
    monkeypatch.setenv("HOOPGW_TEST_PW", "s3cret-value")

    secret = resolve("env:HOOPGW_TEST_PW")

    assert secret.reveal() == "s3cret-value"
    assert secret.reference == "env:HOOPGW_TEST_PW"
    assert logs.redact("password s3cret-value") == "password ***"


@pytest.mark.parametrize("value", [None, ""])
def test_env_reference_missing_or_empty_names_variable_and_key(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("HOOPGW_TEST_PW", raising=False)
    else:
        monkeypatch.setenv("HOOPGW_TEST_PW", value)

    with pytest.raises(SecretError) as caught:
        resolve("env:HOOPGW_TEST_PW")

    message = str(caught.value)
    assert "HOOPGW_TEST_PW" in message
    assert "credential.password" in message
    assert "'pg'" in message
    assert isinstance(caught.value, ConfigError)
    assert caught.value.key == "credential.password"


def test_file_reference_is_relative_to_base_dir_and_loses_one_newline(tmp_path):
    (tmp_path / "pw").write_text("line-secret\n\n")

    assert resolve("file:pw", tmp_path).reveal() == "line-secret\n"


def test_file_reference_strips_crlf_and_accepts_absolute_path(tmp_path):
    path = tmp_path / "pw"
    path.write_bytes(b"windows-secret\r\n")

    assert resolve(f"file:{path}").reveal() == "windows-secret"


def test_file_reference_missing_file(tmp_path):
    with pytest.raises(SecretError, match=r"cannot read secret file .*missing"):
        resolve("file:missing", tmp_path)


def test_file_reference_empty_file(tmp_path):
    (tmp_path / "pw").write_text("\n")

    with pytest.raises(SecretError, match="is empty"):
        resolve("file:pw", tmp_path)


@pytest.mark.parametrize("literal", ["hunter2", "env:", "file:", "vault:x", "ENV:X"])
def test_literal_value_is_refused_without_being_repeated(literal):
    with pytest.raises(SecretError) as caught:
        resolve(literal)

    message = str(caught.value)
    assert "must be a secret reference (env:NAME or file:PATH), not a literal value" in message
    assert "hunter2" not in message
    assert literal not in message.replace("env:NAME", "").replace("file:PATH", "")


# -- who may change the files -------------------------------------------------------------------


def secret_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "pg.pass"
    path.write_text("hunter2\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400])
def test_a_secret_file_of_the_gateway_user_resolves(tmp_path, mode):
    assert resolve("file:pg.pass", secret_file(tmp_path, mode).parent).reveal() == "hunter2"


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o660])
def test_a_secret_file_others_may_write_is_refused_naming_it_and_the_fix(tmp_path, mode):
    path = secret_file(tmp_path, mode)
    with pytest.raises(SecretError) as caught:
        resolve("file:pg.pass", tmp_path)
    message = str(caught.value)
    assert message.startswith("connection 'pg', key 'credential.password': secret file")
    assert f"writable by group or others (mode {mode:04o})" in message
    assert f"chmod go-w {str(path)!r}" in message
    assert "hunter2" not in message


def test_a_secret_file_every_user_may_read_is_accepted_with_a_warning(tmp_path, monkeypatch):
    from hoopgw import secrets

    warned: list[dict] = []
    monkeypatch.setattr(secrets.log, "warn", lambda fmt, **kw: warned.append(kw))
    secret_file(tmp_path, 0o644)
    assert resolve("file:pg.pass", tmp_path).reveal() == "hunter2"
    assert [w["mode"] for w in warned] == ["0644"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_secret_file_owned_by_another_user_is_refused(tmp_path):
    path = secret_file(tmp_path, 0o600)
    os.chown(path, 4321, -1)
    with pytest.raises(SecretError, match=r"owned by another user \(uid 4321\)"):
        resolve("file:pg.pass", tmp_path)


def read_only_mount(monkeypatch) -> None:
    """Every file looks as if on a read-only mount."""
    for name in ("statvfs", "fstatvfs"):
        real = getattr(os, name)
        monkeypatch.setattr(
            os,
            name,
            lambda p, real=real: type("R", (), {"f_flag": real(p).f_flag | os.ST_RDONLY})(),
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_secret_file_on_a_read_only_mount_may_be_owned_by_a_host_user(tmp_path, monkeypatch):
    """A container's ``:ro`` bind mount shows the host's owner and group."""
    path = secret_file(tmp_path, 0o660)
    os.chown(path, 4321, 4321)
    read_only_mount(monkeypatch)
    assert resolve("file:pg.pass", tmp_path).reveal() == "hunter2"


def test_a_secret_file_others_may_write_is_refused_on_a_read_only_mount_too(tmp_path, monkeypatch):
    """A read-only bind mount shares the file with the host's writable mount: every user of
    the host could still rewrite a file of mode 0666 there, and the container reads it."""
    path = secret_file(tmp_path, 0o666)
    read_only_mount(monkeypatch)
    with pytest.raises(SecretError, match=r"writable by group or others \(mode 0666\)"):
        resolve("file:pg.pass", tmp_path)
    path.chmod(0o644)
    assert resolve("file:pg.pass", tmp_path).reveal() == "hunter2"


def test_the_file_checked_is_the_file_read(tmp_path, monkeypatch):
    """A file swapped in between the check and the read (a rename or a symlink in a folder
    someone else can write) never has its contents used under the checked file's name."""
    secret_file(tmp_path, 0o600)
    planted = tmp_path / "planted"
    planted.write_text("attacker's\n")
    planted.chmod(0o666)
    for name in ("statvfs", "fstatvfs"):
        real = getattr(os, name)

        def swap_then(p, real=real):
            result = real(p)
            if planted.exists():
                planted.rename(tmp_path / "pg.pass")
            return result

        monkeypatch.setattr(os, name, swap_then)
    assert resolve("file:pg.pass", tmp_path).reveal() == "hunter2"
