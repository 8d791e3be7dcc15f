"""Secret references in the config, and the value type that keeps them out of sight.

The config never holds a secret literally. A key that takes a secret (a target password, for
instance) takes a *reference* instead:

``env:NAME``
    the value of environment variable ``NAME``; missing or empty is an error.
``file:PATH``
    the contents of the file at ``PATH`` (relative paths are relative to the config file's
    folder), with one trailing newline removed; missing, unreadable or empty is an error.

A file the gateway trusts (the config file, a ``file:`` secret) must not be one another user can
change: :func:`read_trusted_file` refuses it, as OpenSSH's ``StrictModes`` does.

A resolved value is wrapped in :class:`Secret`, whose ``repr`` and ``str`` show the reference and
never the value, and is registered with :func:`hoopgw.runtime.logs.register_secret` so that a log
line
that somehow contains it is redacted anyway.

An API key's secret is kept only as a SCRAM-SHA-256 verifier (RFC 5802, RFC 7677):
:class:`ScramVerifier` and the key derivation below, shared by the store and the protocols that
check a client with SCRAM.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import attrs
from twisted.logger import Logger

from hoopgw.errors import ConfigError, SecretError
from hoopgw.runtime import logs

log = Logger(namespace="hoopgw.secrets")


def read_trusted_file(
    path: Path, *, what: str, secret: bool = False, key: str = "", connection: str = ""
) -> bytes:
    """The contents of ``path``, a file the gateway trusts, once :func:`check_file_owner`
    accepts it. The file is opened once and the checks look at the open file itself
    (``fstat``), so the bytes returned are those of the file checked: a rename or a symlink
    swapped in between cannot pass one file's owner and mode off for another's contents.

    :raises OSError: the file cannot be opened or read (the caller words the error).
    :raises ConfigError: as :func:`check_file_owner`.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    with open(os.open(path, flags), "rb") as file:
        check_file_owner(
            file.fileno(), path, what=what, secret=secret, key=key, connection=connection
        )
        return file.read()


def check_file_owner(
    fd: int,
    path: Path,
    *,
    what: str,
    secret: bool = False,
    key: str = "",
    connection: str = "",
) -> None:
    """Refuse the open file ``fd`` (``path``, for the message) when a user other than the
    gateway's (or root) could change it: one owned by such a user, or writable by its group or
    by others. Whoever may write the config file or a secret file decides the gateway's
    policy, or its credentials. A ``secret`` file readable by others is allowed with a warning
    (its group may be the one that needs to read it).

    On a read-only mount (a container's ``:ro`` bind mount, a compose or Kubernetes secret)
    the owner and group are the host's, so they are not checked; but a file writable by others
    still is refused: a read-only *bind* mount shares the file with the host's own, writable
    mount, where every user can change it.

    :param what: what the file is, for the message (``config file``, ``secret file``).
    :raises ConfigError: naming the file, what is wrong and the command that fixes it (a
        :class:`~hoopgw.errors.SecretError` for a ``secret``).
    """
    if os.name != "posix":
        return
    info = os.fstat(fd)
    read_only = bool(os.fstatvfs(fd).f_flag & os.ST_RDONLY)
    error = SecretError if secret else ConfigError
    me = os.geteuid()
    if info.st_uid not in (0, me) and not read_only:
        raise error(
            f"{what} {str(path)!r} is owned by another user (uid {info.st_uid}), who could"
            f" change it: make it the gateway's (chown {me} {str(path)!r})",
            key=key,
            connection=connection,
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & (0o002 if read_only else 0o022):
        where = " (on the host: the read-only mount shares it)" if read_only else ""
        raise error(
            f"{what} {str(path)!r} is writable by group or others (mode {mode:04o}), who could"
            f" change it: chmod go-w {str(path)!r}{where}",
            key=key,
            connection=connection,
        )
    if secret and mode & 0o004:
        log.warn(
            "{what} {path!r} is readable by every user (mode {mode:04o}): chmod o-r it",
            what=what,
            path=str(path),
            mode=f"{mode:04o}",
        )


@attrs.frozen(kw_only=True, repr=False)
class Secret:
    """A resolved secret. Printing it shows where it came from, never what it is."""

    reference: str
    """The reference it was resolved from, e.g. ``env:PGPASSWORD``; safe to show."""
    _value: str = attrs.field(alias="value")
    """The secret itself; read it with :meth:`reveal`."""

    def reveal(self) -> str:
        """Return the secret value. Call this only where the value is sent to its one consumer."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    __str__ = __repr__


def resolve_secret(reference: str, *, key: str, connection: str = "", base_dir: Path) -> Secret:
    """Resolve an ``env:`` or ``file:`` reference into a :class:`Secret`.

    :param reference: the string written in the config.
    :param key: the config key holding it, for error messages.
    :param connection: the connection it belongs to, for error messages.
    :param base_dir: the config file's folder; relative ``file:`` paths start there.
    :raises SecretError: if the reference is malformed or cannot be resolved. The message names
        the reference's variable or path and the key, and never contains a value.
    """
    scheme, _, name = reference.partition(":")
    if scheme == "env" and name:
        value = os.environ.get(name, "")
        if not value:
            raise SecretError(
                f"environment variable {name!r} is not set or empty", key=key, connection=connection
            )
    elif scheme == "file" and name:
        path = base_dir / Path(name).expanduser()
        try:
            value = read_trusted_file(
                path, what="secret file", secret=True, key=key, connection=connection
            ).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise SecretError(
                f"cannot read secret file {str(path)!r}: {reason}", key=key, connection=connection
            ) from None
        # Editors end files with a newline; it is never part of the secret.
        value = value.removesuffix("\r\n") if value.endswith("\r\n") else value.removesuffix("\n")
        if not value:
            raise SecretError(f"secret file {str(path)!r} is empty", key=key, connection=connection)
    else:
        # The string may be a real password pasted into the config: never repeat it.
        raise SecretError(
            "must be a secret reference (env:NAME or file:PATH), not a literal value",
            key=key,
            connection=connection,
        )
    logs.register_secret(value)
    return Secret(reference=reference, value=value)


# -- SCRAM-SHA-256 verifiers ----------------------------------------------------------------------

DEFAULT_ITERATIONS = 4096


@attrs.frozen(kw_only=True)
class ScramVerifier:
    """What a server stores to check a SCRAM-SHA-256 client without knowing its password."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """``Hi(Normalize(password), salt, i)``; passwords are used as UTF-8 without SASLprep,
    as PostgreSQL does for passwords that are not valid SASLprep input."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def client_key(salted: bytes) -> bytes:
    """``HMAC(SaltedPassword, "Client Key")``."""
    return hmac.digest(salted, b"Client Key", "sha256")


def server_key(salted: bytes) -> bytes:
    """``HMAC(SaltedPassword, "Server Key")``."""
    return hmac.digest(salted, b"Server Key", "sha256")


def make_verifier(
    password: str, salt: bytes, iterations: int = DEFAULT_ITERATIONS
) -> ScramVerifier:
    """Derive the stored verifier for ``password``."""
    salted = salted_password(password, salt, iterations)
    return ScramVerifier(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.sha256(client_key(salted)).digest(),
        server_key=server_key(salted),
    )
