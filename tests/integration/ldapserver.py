"""A throwaway OpenLDAP ``slapd`` for tests: its own config and database under a temporary
folder, listening on a free loopback port, loaded with a small directory.

The directory (suffix ``dc=example,dc=org``)::

    cn=reader                    service account (password READER_PASSWORD)
    ou=people
        uid=alice                member of dba (directly) and of ops (through dba)
        uid=bob                  member of agents
        uid=carol                member of nothing
    ou=groups
        cn=dba                   member: alice
        cn=ops                   member: cn=dba (a nested group)
        cn=agents                member: bob
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import attrs

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"

SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    return None


def available() -> bool:
    """Whether slapd and ldapadd are installed."""
    return _program("slapd") is not None and _program("ldapadd") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ldif() -> str:
    def person(uid: str) -> str:
        return (
            f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
            f"cn: {uid.title()}\nsn: {uid.title()}\n"
        )

    def group(cn: str, *members: str) -> str:
        lines = "".join(f"member: {m}\n" for m in members)
        return f"dn: cn={cn},{GROUPS}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}"

    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: Example\n",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {READER_PASSWORD}\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        person("alice"),
        person("bob"),
        person("carol"),
        group("dba", f"uid=alice,{PEOPLE}"),
        group("ops", f"cn=dba,{GROUPS}"),
        group("agents", f"uid=bob,{PEOPLE}"),
    ]
    return "\n".join(entries)


@attrs.define
class LdapServer:
    """A running slapd; :meth:`stop` ends it."""

    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start slapd and wait until it answers."""
        slapd = _program("slapd")
        assert slapd is not None
        log = (self.folder / "slapd.log").open("ab")
        self.process = subprocess.Popen(
            [slapd, "-d", "0", "-f", str(self.folder / "slapd.conf"), "-h", self.url + "/"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"slapd exited with {self.process.returncode}: "
                    + (self.folder / "slapd.log").read_text(errors="replace")
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not listen within 15 s")

    def stop(self) -> None:
        """Stop slapd (the directory goes down; :meth:`start` brings it back)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def start_ldap_server(folder: Path) -> LdapServer:
    """Write a config and database under ``folder``, start slapd and load the directory."""
    data = folder / "data"
    data.mkdir(parents=True)
    includes = "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
    (folder / "slapd.conf").write_text(
        f"{includes}"
        "modulepath /usr/lib/ldap\n"
        "moduleload back_mdb\n"
        f"pidfile {folder}/slapd.pid\n"
        "database mdb\n"
        "maxsize 16777216\n"
        f'suffix "{SUFFIX}"\n'
        f'rootdn "{ROOT_DN}"\n'
        f"rootpw {ROOT_PASSWORD}\n"
        f"directory {data}\n"
        # The service account reads; nobody else (anonymous) does.
        "access to attrs=userPassword by anonymous auth by * none\n"
        f'access to * by dn.exact="{READER_DN}" read by * none\n'
    )
    server = LdapServer(folder=folder, port=_free_port())
    server.start()
    ldapadd = _program("ldapadd")
    assert ldapadd is not None
    (folder / "directory.ldif").write_text(_ldif())
    subprocess.run(
        [
            ldapadd,
            "-x",
            "-H",
            server.url,
            "-D",
            ROOT_DN,
            "-w",
            ROOT_PASSWORD,
            "-f",
            str(folder / "directory.ldif"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return server
