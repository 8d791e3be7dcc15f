import os
from pathlib import Path

import attrs
import pytest

from hoopgw import plugin
from hoopgw.audit.chain import Durability
from hoopgw.audit.checkpoints import generate_signing_key, private_key_pem
from hoopgw.config.gateway import GatewayConfig, resolve_store_url
from hoopgw.config.load import Config, load_config, parse_config
from hoopgw.connection import ConnectionConfig
from hoopgw.errors import ConfigError, SecretError
from hoopgw.plugin import Option
from hoopgw.runtime import logs

REPO = Path(__file__).resolve().parents[3]


class GuardPlugin:
    options = (
        Option(
            name="mode",
            type=str,
            help="how strict",
            default="strict",
            check=lambda v: None if v in ("strict", "lax") else "must be strict or lax",
        ),
    )


class NeedyPlugin:
    options = (Option(name="url", type=str, help="where to send alerts"),)


class FakeEntryPoint:
    def __init__(self, name, cls):
        self.name = name
        self._cls = cls

    def load(self):
        return self._cls


@pytest.fixture(autouse=True)
def fake_plugins(monkeypatch):
    """Plugins 'guard' and 'needy' are installed; nothing else is."""
    installed = {"guard": GuardPlugin, "needy": NeedyPlugin}
    monkeypatch.setattr(
        plugin,
        "available_plugins",
        lambda: {name: FakeEntryPoint(name, cls) for name, cls in installed.items()},
    )
    monkeypatch.setattr(logs, "_secrets", ())


CONNECTION = """
[[connections]]
name = "pg"
protocol = "postgres"
listen = "tcp:15432:interface=127.0.0.1"
target = "db.internal:5432"
allow_groups = ["agents"]
client_tls = "disabled"
credential = {{ user = "app" }}
{extra}
"""


def parse(text: str, base_dir: Path = Path("/etc/hoopgw")) -> Config:
    return parse_config(text, base_dir=base_dir)


def connection(extra: str = "", **replace: str) -> str:
    text = CONNECTION.format(extra=extra)
    for key, value in replace.items():
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        if value is not None:
            lines.insert(2, f"{key} = {value}")
        text = "\n".join(lines) + "\n"
    return text


def error_of(text: str, base_dir: Path = Path("/etc/hoopgw")) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, base_dir)
    return caught.value


# -- defaults and the whole shape ----------------------------------------------------------


def test_minimal_config_gets_documented_defaults():
    config = parse(connection())

    assert config.gateway == GatewayConfig()
    assert config.gateway.max_message_size == 64 * 1024 * 1024
    [pg] = config.connections
    assert pg == ConnectionConfig(
        name="pg",
        protocol="postgres",
        listen="tcp:15432:interface=127.0.0.1",
        target="db.internal:5432",
        credential=pg.credential,
        allow_groups=("agents",),
        upstream_tls=pg.upstream_tls,
        client_tls="disabled",
    )
    assert pg.credential.user == "app" and pg.credential.password is None
    assert pg.upstream_tls.sslmode == "prefer"
    assert pg.upstream_tls.server_name == "db.internal"
    assert pg.target_host == "db.internal" and pg.target_port == 5432
    assert pg.plugins == () and pg.plugin_options == {}
    assert pg.allow_cleartext_password is False


def test_empty_file_is_a_gateway_with_no_connections():
    config = parse("")

    assert config.connections == ()
    assert config.base_dir == Path("/etc/hoopgw")


def test_connections_keep_file_order():
    text = connection() + connection(name='"alpha"', listen='"tcp:15433"')

    assert [c.name for c in parse(text).connections] == ["pg", "alpha"]


def test_toml_syntax_error_names_line_and_column():
    error = error_of('[gateway]\nstore = "sqlite:///x.db"\nlog_level = info\n')

    assert "not valid TOML" in str(error)
    assert "line 3" in str(error) and "column" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        ("colour = 1", "colour", ""),
        ("[gateway]\nstorage = 'x'", "gateway.storage", ""),
        (connection("colour = 'red'"), "colour", "pg"),
        (connection(credential="{ user = 'a', pasword = 'env:X' }"), "credential.pasword", "pg"),
        (connection("[connections.upstream_tls]\nmode = 'require'"), "upstream_tls.mode", "pg"),
    ],
)
def test_unknown_key_is_an_error_naming_key_and_connection(text, key, where):
    error = error_of(text)

    assert error.key == key
    assert error.connection == where
    assert "unknown key" in str(error)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (connection(target="5432"), "target", "expected str, got int"),
        (connection(allow_groups="'agents'"), "allow_groups", "expected list, got str"),
        (connection(allow_groups="[1]"), "allow_groups", "expected list of non-empty str"),
        (connection(client_tls="true"), "client_tls", "expected str, got bool"),
        (
            connection(allow_cleartext_password="'yes'"),
            "allow_cleartext_password",
            "expected bool, got str",
        ),
        (connection(credential="{ user = 7 }"), "credential.user", "expected str, got int"),
        (connection(credential="'app'"), "credential", "expected table, got str"),
        (connection(upstream_tls="1"), "upstream_tls", "expected table, got int"),
    ],
)
def test_wrong_type_names_key_connection_and_types(text, key, message):
    error = error_of(text)

    assert error.key == key
    assert error.connection == "pg"
    assert message in str(error)


@pytest.mark.parametrize(
    ("gateway", "key", "message"),
    [
        ("max_message_size = true", "gateway.max_message_size", "expected int, got bool"),
        ("max_message_size = 1023", "gateway.max_message_size", "at least 1024"),
        ("auth_timeout = 'soon'", "gateway.auth_timeout", "expected int or float, got str"),
        ("auth_timeout = 0", "gateway.auth_timeout", "greater than 0"),
        ("approval_timeout = -1.5", "gateway.approval_timeout", "greater than 0"),
        ("approval_timeout = inf", "gateway.approval_timeout", "finite"),
        ("shutdown_grace = -1", "gateway.shutdown_grace", "finite number, 0 or more"),
        ("log_format = 'xml'", "gateway.log_format", "must be one of text, json"),
        ("log_level = 'warning'", "gateway.log_level", "debug, info, warn, error"),
        ("store = 'mysql://audit@db/audit'", "gateway.store", "postgresql://USER@HOST"),
        ("store = 'postgresql://'", "gateway.store", "sqlite:///PATH"),
        ("instance = 'gw-a'", "gateway.instance", "only a postgresql:// store"),
        (
            "store = 'postgresql://db/audit'\ninstance = 'GW A'",
            "gateway.instance",
            "lowercase letters",
        ),
        ("store = 'sqlite:///'", "gateway.store", "sqlite:///PATH"),
        ("store = 'sqlite://./x.db'", "gateway.store", "sqlite:///PATH"),
        ("admin_listen = 'tcp:nope'", "gateway.admin_listen", "not a valid Twisted"),
        ("tls_cert = 'cert.pem'", "gateway.tls_key", "set together"),
        ("tls_key = 'key.pem'", "gateway.tls_cert", "set together"),
        ("checkpoint_every = 0", "gateway.checkpoint_every", "at least 1"),
        ("checkpoint_every = 1.5", "gateway.checkpoint_every", "expected int"),
        ("checkpoint_interval = 0", "gateway.checkpoint_interval", "greater than 0"),
        ("checkpoint_dir = ''", "gateway.checkpoint_dir", "must not be empty"),
        ("signing_key = 'raw-key-text'", "gateway.signing_key", "must be a secret reference"),
        ("audit_durability = 'none'", "gateway.audit_durability", "must be one of fsync, os"),
        ("audit_durability = 'FSYNC'", "gateway.audit_durability", "must be one of fsync, os"),
        ("audit_durability = true", "gateway.audit_durability", "expected str"),
        ("audit_sync_interval = 0", "gateway.audit_sync_interval", "greater than 0"),
        ("audit_sync_interval = -0.01", "gateway.audit_sync_interval", "greater than 0"),
        ("audit_sync_interval = nan", "gateway.audit_sync_interval", "greater than 0"),
        ("audit_sync_interval = '10ms'", "gateway.audit_sync_interval", "expected int or float"),
        (
            "audit_sync_interval = 1.5",
            "gateway.audit_sync_interval",
            "must be at most 1 s: a crash",
        ),
        (
            "metrics_allow = ['loopback']",
            "gateway.metrics_allow",
            "'loopback' is not an IP network",
        ),
        ("metrics_allow = '10.0.0.0/8'", "gateway.metrics_allow", "expected list"),
        ("workers = 0", "gateway.workers", "must be from 1 to 64"),
        ("workers = 65", "gateway.workers", "must be from 1 to 64"),
        ("workers = 2.0", "gateway.workers", "expected int"),
        ("workers = true", "gateway.workers", "expected int"),
        (
            "workers = 2\ntls_cert = 'c.pem'\ntls_key = 'k.pem'\nagent_listen = 'tcp:9443'",
            "gateway.workers",
            "cannot serve network agents",
        ),
    ],
)
def test_gateway_values_are_checked(gateway, key, message):
    error = error_of(f"[gateway]\n{gateway}\n")

    assert error.key == key
    assert message in str(error)


def test_gateway_values_are_read(tmp_path):
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    config = parse(
        """
        [gateway]
        store = "sqlite:////var/lib/hoopgw/audit.db"
        admin_listen = "tcp:8080:interface=127.0.0.1"
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        log_format = "json"
        log_level = "debug"
        auth_timeout = 10
        approval_timeout = 60.5
        max_message_size = 1024
        shutdown_grace = 0
        """,
        tmp_path,
    )

    assert config.gateway == GatewayConfig(
        store="sqlite:////var/lib/hoopgw/audit.db",
        admin_listen="tcp:8080:interface=127.0.0.1",
        tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"),
        log_format="json",
        log_level="debug",
        auth_timeout=10.0,
        approval_timeout=60.5,
        max_message_size=1024,
        shutdown_grace=0.0,
    )
    assert config.store_url == "sqlite:////var/lib/hoopgw/audit.db"


def test_checkpoint_settings_are_read(tmp_path):
    (tmp_path / "signing.pem").write_bytes(private_key_pem(generate_signing_key()))
    config = parse(
        """
        [gateway]
        store = "sqlite:///data/audit.db"
        signing_key = "file:signing.pem"
        checkpoint_dir = "cp"
        checkpoint_every = 10
        checkpoint_interval = 2.5
        """,
        tmp_path,
    )

    gw = config.gateway
    assert gw.signing_key.reference == "file:signing.pem"
    assert gw.signing_key.reveal().startswith("-----BEGIN PRIVATE KEY-----")
    assert "PRIVATE KEY" not in repr(config)
    assert (gw.checkpoint_dir, gw.checkpoint_every, gw.checkpoint_interval) == (
        str(tmp_path / "cp"),
        10,
        2.5,
    )
    assert config.checkpoint_path == tmp_path / "cp"


def test_checkpoints_default_to_a_folder_next_to_the_store(tmp_path):
    config = parse('[gateway]\nstore = "sqlite:///data/audit.db"\n', tmp_path)
    assert config.gateway.signing_key is None
    assert (config.gateway.checkpoint_every, config.gateway.checkpoint_interval) == (1000, 300.0)
    assert config.checkpoint_path == tmp_path / "data" / "checkpoints"
    memory = parse('[gateway]\nstore = "sqlite:///:memory:"\n', tmp_path)
    assert memory.checkpoint_path == tmp_path / "checkpoints"


def test_a_postgresql_store_names_the_instance_its_journal_and_checkpoints(tmp_path):
    text = '[gateway]\nstore = "postgresql://gw@db/audit"\ninstance = "gw-a"\n'
    config = parse(text, tmp_path)
    assert config.store_url == "postgresql://gw@db/audit"
    assert config.gateway.instance == "gw-a"
    assert config.journal_path == str(tmp_path / "gw-a.audit-journal")
    assert config.chain_checkpoint_path("gw-a") == tmp_path / "checkpoints" / "gw-a"
    elsewhere = parse(text + 'journal_dir = "state"\n', tmp_path)
    assert elsewhere.journal_path == str(tmp_path / "state" / "gw-a.audit-journal")


def test_the_instance_defaults_to_the_host_name(tmp_path, monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "Gateway-7.example")
    config = parse('[gateway]\nstore = "postgres://gw@db/audit"\n', tmp_path)
    assert config.gateway.instance == "gateway-7.example"


def test_workers_default_to_one_process_and_are_read(tmp_path):
    assert parse("", tmp_path).gateway.workers == 1
    assert parse("[gateway]\nworkers = 4\n", tmp_path).gateway.workers == 4


def test_a_sqlite_store_has_the_one_unnamed_chain(tmp_path):
    config = parse('[gateway]\nstore = "sqlite:///audit.db"\n', tmp_path)
    assert config.gateway.instance == ""
    assert config.journal_path == str(tmp_path / "audit.db.audit-journal")
    assert config.chain_checkpoint_path("") == config.checkpoint_path


def test_audit_durability_defaults_to_fsync_every_record(tmp_path):
    gw = parse("[gateway]\n", tmp_path).gateway
    assert (gw.audit_durability, gw.audit_sync_interval) == ("fsync", 0.01)
    assert gw.durability == Durability(mode="fsync", sync_interval=0.01)


def test_audit_durability_os_and_its_sync_interval_are_read(tmp_path):
    text = '[gateway]\naudit_durability = "os"\naudit_sync_interval = 1\n'
    gw = parse(text, tmp_path).gateway
    assert gw.durability == Durability(mode="os", sync_interval=1.0)


def test_a_signing_key_that_is_no_ed25519_pem_is_refused(tmp_path):
    (tmp_path / "signing.pem").write_text("not a key")

    error = error_of("[gateway]\nsigning_key = 'file:signing.pem'\n", tmp_path)

    assert error.key == "gateway.signing_key"
    assert "not an unencrypted PEM private key" in str(error)
    assert "not a key" not in str(error)


def test_tls_file_that_cannot_be_read_is_named(tmp_path):
    (tmp_path / "cert.pem").write_text("cert")

    error = error_of("[gateway]\ntls_cert = 'cert.pem'\ntls_key = 'nokey.pem'\n", tmp_path)

    assert error.key == "gateway.tls_key"
    assert "nokey.pem" in str(error)


# -- store URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("sqlite:///./hoopgw.db", "sqlite:////etc/hoopgw/hoopgw.db"),
        ("sqlite:///data/audit.db", "sqlite:////etc/hoopgw/data/audit.db"),
        ("sqlite:///../audit.db", "sqlite:////etc/audit.db"),
        ("sqlite:////var/lib/hoopgw.db", "sqlite:////var/lib/hoopgw.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
    ],
)
def test_relative_sqlite_path_is_relative_to_the_config_folder(url, resolved):
    assert resolve_store_url(url, base_dir=Path("/etc/hoopgw")) == resolved
    assert parse(f"[gateway]\nstore = '{url}'\n").store_url == resolved


# -- connection keys ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["name", "protocol", "listen", "target", "allow_groups"])
def test_required_connection_keys(key):
    error = error_of(connection(**{key: None}))

    assert error.key == key
    assert "required" in str(error)


def test_missing_name_names_the_connection_by_position():
    error = error_of(connection() + connection(name=None))

    assert error.connection == "#2"


@pytest.mark.parametrize("name", ["'PG'", "'-pg'", "'pg local'", "''", "'pg.1'"])
def test_bad_connection_name(name):
    error = error_of(connection(name=name))

    assert error.key == "name"
    assert "[a-z0-9][a-z0-9_-]*" in str(error)


def test_duplicate_connection_name():
    error = error_of(connection() + connection(listen="'tcp:15433'"))

    assert error.key == "name" and error.connection == "pg"
    assert "duplicate" in str(error)


def test_missing_credential_is_an_error():
    error = error_of(connection(credential=None))

    assert error.key == "credential"


def test_protocol_must_be_installed_and_error_lists_installed_ones():
    error = error_of(connection(protocol="'mongodb'"))

    assert error.key == "protocol"
    assert "'mongodb' is not installed" in str(error)
    assert "postgres" in str(error)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("'tcp:abc'", "not a valid Twisted server endpoint"),
        ("'tcp:1:bogus=1'", "not a valid Twisted server endpoint"),
        ("'15432'", "not a valid Twisted server endpoint"),
        ("'tcp:70000'", "port must be from 0 to 65535"),
        ("'tcp:5432:interface=db.local'", "is not an IP address"),
        ("'ssl:5432:privateKey=k.pem'", "not a valid Twisted server endpoint"),
    ],
)
def test_bad_listen(listen, message):
    error = error_of(connection(listen=listen))

    assert error.key == "listen"
    assert message in str(error)


def self_signed_pem() -> bytes:
    """A throwaway key and certificate in one PEM, as Twisted's ssl: endpoint wants them."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + cert.public_bytes(serialization.Encoding.PEM)


def test_listen_endpoint_with_its_own_tls_is_refused(tmp_path):
    (tmp_path / "server.pem").write_bytes(self_signed_pem())

    error = error_of(connection(listen=f"'ssl:5432:privateKey={tmp_path / 'server.pem'}'"))

    assert error.key == "listen"
    assert "must be a tcp:, tcp6: or unix: endpoint" in str(error)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("tcp:15432:interface=127.0.0.1", "tcp:15432:interface=127.0.0.1"),
        ("tcp:15432", "tcp:15432:interface=127.0.0.1"),
        ("tcp:port=15432:interface=127.0.0.1", "tcp:15432:interface=0.0.0.0"),
        (r"tcp6:15432:interface=\:\:1", r"tcp6:15432:interface=0\:0\:\:0\:1"),
        (r"tcp6:15432", "tcp:15432:interface=10.0.0.1"),
        ("unix:/run/hoopgw/pg.sock", "unix:/run/hoopgw/../hoopgw/pg.sock"),
    ],
)
def test_two_connections_on_the_same_address_are_named_both(first, second):
    text = connection(listen=f"'{first}'") + connection(name="'second'", listen=f"'{second}'")

    error = error_of(text)

    assert error.key == "listen"
    assert error.connection == "second"
    assert "connection 'pg'" in str(error)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("tcp:15432:interface=127.0.0.1", "tcp:15433:interface=127.0.0.1"),
        ("tcp:15432:interface=127.0.0.1", "tcp:15432:interface=127.0.0.2"),
        ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        ("unix:/run/a.sock", "unix:/run/b.sock"),
    ],
)
def test_distinct_listen_addresses_are_fine(first, second):
    text = connection(listen=f"'{first}'") + connection(name="'second'", listen=f"'{second}'")

    assert len(parse(text).connections) == 2


@pytest.mark.parametrize("admin", [False, True])
def test_with_workers_two_listeners_may_not_share_a_description(admin):
    """The parent and its workers name a listener by its ``listen`` text: two ``tcp:0`` the
    same would be one socket, served with one listener's protocol (or the admin API's)."""
    same = "'tcp:0:interface=127.0.0.1'"
    gateway = "[gateway]\nworkers = 2\n" + (f"admin_listen = {same}\n" if admin else "")
    text = gateway + connection(listen=same)
    if not admin:
        text += connection(name="'second'", listen=same)

    error = error_of(text)

    assert error.key == "listen"
    assert error.connection == ("pg" if admin else "second")
    assert "workers" in str(error)


def test_connection_may_not_listen_on_the_admin_address():
    text = "[gateway]\nadmin_listen = 'tcp:15432'\n" + connection()

    error = error_of(text)

    assert error.connection == "pg" and error.key == "listen"
    assert "[gateway] admin_listen" in str(error)


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("'db:5432'", "db", 5432),
        ("'10.0.0.5:1'", "10.0.0.5", 1),
        ("'[::1]:65535'", "::1", 65535),
    ],
)
def test_target_host_and_port(target, host, port):
    [pg] = parse(connection(target=target)).connections

    assert (pg.target_host, pg.target_port) == (host, port)
    assert pg.upstream_tls.server_name == host


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("'db'", "HOST:PORT"),
        ("':5432'", "HOST:PORT"),
        ("'db:0'", "1 to 65535"),
        ("'db:65536'", "1 to 65535"),
        ("'db:http'", "1 to 65535"),
        ("'::1:5432'", "in brackets"),
        ("'[db]:5432'", "not an IPv6 address"),
    ],
)
def test_bad_target(target, message):
    error = error_of(connection(target=target))

    assert error.key == "target"
    assert message in str(error)


def test_empty_allow_groups_means_nobody_and_is_allowed():
    [pg] = parse(connection(allow_groups="[]")).connections

    assert pg.allow_groups == ()


# -- TLS ----------------------------------------------------------------------------------


def test_required_client_tls_needs_a_gateway_certificate():
    error = error_of(connection(client_tls="'required'"))

    assert error.key == "client_tls"
    assert "tls_cert" in str(error)


def test_optional_client_tls_without_a_certificate_means_no_tls_offered(tmp_path):
    [pg] = parse(connection(client_tls="'optional'"), tmp_path).connections
    assert pg.client_tls == "optional"


@pytest.mark.parametrize("method", ["auto", "password", "scram"])
def test_client_auth_methods(tmp_path, method):
    [pg] = parse(connection(client_auth=f"'{method}'"), tmp_path).connections
    assert pg.client_auth == method


def test_unknown_client_auth_method_is_named():
    error = error_of(connection(client_auth="'md5'"))
    assert error.key == "client_auth"


def test_client_tls_defaults_to_optional_when_gateway_has_a_certificate(tmp_path):
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    text = "[gateway]\ntls_cert = 'cert.pem'\ntls_key = 'key.pem'\n" + connection(client_tls=None)

    [pg] = parse(text, tmp_path).connections

    assert pg.client_tls == "optional"


def test_client_tls_must_be_a_known_mode():
    assert "must be one of optional, required, disabled" in str(
        error_of(connection(client_tls="'maybe'"))
    )


def test_upstream_tls_values_are_read(tmp_path):
    (tmp_path / "ca.pem").write_text("ca")
    text = connection(
        "[connections.upstream_tls]\nsslmode = 'verify-full'\nca_file = 'ca.pem'\n"
        "server_name = 'db.example.com'\n"
    )

    [pg] = parse(text, tmp_path).connections

    assert pg.upstream_tls.sslmode == "verify-full"
    assert pg.upstream_tls.ca_file == str(tmp_path / "ca.pem")
    assert pg.upstream_tls.server_name == "db.example.com"


def test_verify_full_needs_a_ca_file():
    error = error_of(connection(upstream_tls="{ sslmode = 'verify-full' }"))

    assert error.key == "upstream_tls.ca_file" and error.connection == "pg"


def test_unreadable_ca_file(tmp_path):
    error = error_of(
        connection(upstream_tls="{ sslmode = 'require', ca_file = 'x.pem' }"), tmp_path
    )

    assert error.key == "upstream_tls.ca_file"


def test_bad_sslmode():
    error = error_of(connection(upstream_tls="{ sslmode = 'allow' }"))

    assert error.key == "upstream_tls.sslmode"
    assert "disable, prefer, require, verify-full" in str(error)


# -- credential secrets -------------------------------------------------------------------


def test_password_reference_is_resolved(monkeypatch):
    monkeypatch.setenv("HOOPGW_TEST_PG_PW", "t0p-secret")

    [pg] = parse(
        connection(credential="{ user = 'app', password = 'env:HOOPGW_TEST_PG_PW' }")
    ).connections

    assert pg.credential.password is not None
    assert pg.credential.password.reveal() == "t0p-secret"
    assert "t0p-secret" not in repr(pg)
    assert logs.redact("t0p-secret") == "***"


def test_password_file_is_relative_to_the_config_folder(tmp_path):
    (tmp_path / "pg.pw").write_text("from-file\n")

    [pg] = parse(
        connection(credential="{ user = 'app', password = 'file:pg.pw' }"), tmp_path
    ).connections

    assert pg.credential.password.reveal() == "from-file"


def test_literal_password_is_refused_and_not_repeated():
    with pytest.raises(SecretError) as caught:
        parse(connection(credential="{ user = 'app', password = 'Hunter2!' }"))

    assert caught.value.key == "credential.password"
    assert caught.value.connection == "pg"
    assert "Hunter2!" not in str(caught.value)


# -- plugins ------------------------------------------------------------------------------


def test_enabled_plugin_gets_validated_options_with_defaults():
    text = connection("[connections.needy]\nurl = 'https://alerts'\n", plugins="['guard', 'needy']")

    [pg] = parse(text).connections

    assert pg.plugins == ("guard", "needy")
    assert pg.plugin_options == {"guard": {"mode": "strict"}, "needy": {"url": "https://alerts"}}


def test_plugin_option_errors_name_plugin_key_and_connection():
    error = error_of(connection("[connections.guard]\nmode = 'loose'\n", plugins="['guard']"))

    assert error.key == "guard.mode" and error.connection == "pg"
    assert "must be strict or lax" in str(error)


def test_plugin_with_a_required_option_and_no_table():
    error = error_of(connection(plugins="['needy']"))

    assert error.key == "needy.url"


def test_plugin_table_must_be_a_table():
    error = error_of(connection("guard = 'strict'", plugins="['guard']"))

    assert error.key == "guard"
    assert "expected table" in str(error)


def test_plugin_that_is_not_installed_lists_installed_ones():
    error = error_of(connection(plugins="['masking']"))

    assert error.key == "plugins"
    assert "'masking' is not installed" in str(error)
    assert "guard, needy" in str(error)


def test_plugin_listed_twice():
    error = error_of(connection(plugins="['guard', 'guard']"))

    assert error.key == "plugins"
    assert "listed twice" in str(error)


def test_table_for_a_plugin_that_is_not_enabled():
    error = error_of(connection("[connections.guard]\nmode = 'lax'\n"))

    assert error.key == "guard" and error.connection == "pg"
    assert "plugin 'guard' is configured but not enabled" in str(error)


# -- files --------------------------------------------------------------------------------


def test_load_config_resolves_paths_next_to_the_file(tmp_path):
    path = tmp_path / "conf" / "hoopgw.toml"
    path.parent.mkdir()
    path.write_text(connection())

    config = load_config(path)

    assert config.base_dir == path.parent
    assert config.store_url == f"sqlite:///{path.parent}/hoopgw.db"


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_quickstart_example_loads(monkeypatch):
    monkeypatch.undo()  # the real installed plugins, not the fakes

    config = load_config(REPO / "examples" / "quickstart.toml")

    [pg] = config.connections
    assert pg.name == "pg-local"
    assert pg.credential.user == "hoopgw_demo" and pg.credential.password is None
    assert pg.allow_groups == ("agents",) and pg.plugins == ("recording",)
    assert config.store_url == f"sqlite:///{REPO / 'examples' / 'hoopgw.db'}"


def test_full_example_sets_every_key(monkeypatch, tmp_path):
    """examples/full.toml is documentation: it must load and must show every key."""
    monkeypatch.undo()  # the real installed plugins, not the fakes
    monkeypatch.setattr(logs, "_secrets", ())
    monkeypatch.setenv("HOOPGW_PG_PASSWORD", "full-example-pw")
    monkeypatch.setenv("HOOPGW_REPORTING_PASSWORD", "reporting-pw")
    text = (REPO / "examples" / "full.toml").read_text()
    # The example names TLS files relative to itself; give it placeholder files to read.
    (tmp_path / "full.toml").write_text(text)
    (tmp_path / "tls").mkdir()
    for name in ("gateway.crt", "gateway.key", "db-ca.pem"):
        (tmp_path / "tls" / name).write_text("placeholder")
    (tmp_path / "audit-signing.pem").write_bytes(private_key_pem(generate_signing_key()))

    config = load_config(tmp_path / "full.toml")

    for field in attrs.fields(GatewayConfig):
        assert f"\n{field.name} = " in text, field.name
    connection_keys = (
        "name", "protocol", "listen", "target", "allow_groups", "plugins", "client_tls",
        "allow_cleartext_password", "sslmode", "ca_file", "server_name", "user", "password",
    )  # fmt: skip
    for key in connection_keys:
        assert f"\n{key} = " in text, key
    assert config.gateway.tls_cert == str(tmp_path / "tls" / "gateway.crt")
    assert {c.credential.password.reveal() for c in config.connections} == {
        "full-example-pw",
        "reporting-pw",
    }
    assert "full-example-pw" not in repr(config)
    assert config.connections[0].plugin_options == {
        "recording": {"sample_rows": 0, "http_body_chars": 65536}
    }


def test_configuration_doc_shows_the_full_example_and_every_key():
    doc = (REPO / "docs" / "configuration.md").read_text()
    example = (REPO / "examples" / "full.toml").read_text()
    body = example[example.index("[gateway]") :]

    assert f"```toml\n{body}```" in doc
    documented = {"gateway": GatewayConfig, "connections": ConnectionConfig}
    for table, cls in documented.items():
        for field in attrs.fields(cls):
            if field.name not in ("plugin_options", "protocol_options"):
                assert f"| `{field.name}` |" in doc, f"{table}.{field.name}"
    for key in ("ssh", "user", "password", "sslmode", "ca_file", "server_name"):
        assert f"| `{key}` |" in doc, key


# -- [roles] and just-in-time access ---------------------------------------------------------


def test_roles_map_to_groups():
    config = parse('[roles]\napprover = ["dba"]\nadmin = ["ops", "sre"]\n' + connection())
    assert config.roles == {"approver": ("dba",), "admin": ("ops", "sre")}
    assert parse(connection()).roles == {}


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ('approvers = ["dba"]', "key 'roles.approvers': unknown key"),
        ('auditor = "dba"', "key 'roles.auditor': expected list"),
        ('admin = [""]', "key 'roles.admin': expected list of non-empty str"),
    ],
)
def test_roles_errors_name_the_key(roles, message):
    assert message in str(error_of(f"[roles]\n{roles}\n" + connection()))


def test_jit_access_keys():
    api = '[gateway]\nadmin_listen = "tcp:8080:interface=127.0.0.1"\n'
    config = parse(
        api + connection(access='"jit"', jit_approvers='["leads"]', jit_max_duration="1800")
    )
    [pg] = config.connections
    assert (pg.access, pg.jit_approvers, pg.jit_max_duration) == ("jit", ("leads",), 1800.0)
    assert pg.jit_request_ttl == 24 * 3600.0
    assert parse(connection()).connections[0].access == "groups"
    ttl = parse(api + connection(access='"jit"', jit_approvers='["leads"]', jit_request_ttl="900"))
    assert ttl.connections[0].jit_request_ttl == 900.0


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ({"access": '"jit"'}, "key 'jit_approvers': required with access"),
        ({"access": '"open"'}, "key 'access': must be one of groups, jit"),
        ({"jit_max_duration": "0"}, "key 'jit_max_duration': must be a finite number"),
        ({"jit_request_ttl": "-1"}, "key 'jit_request_ttl': must be a finite number"),
    ],
)
def test_jit_errors_name_the_key(replace, message):
    assert message in str(error_of(connection(**replace)))


def test_reviews_need_the_admin_api():
    message = str(error_of(connection(access='"jit"', jit_approvers='["leads"]')))
    assert "key 'access': access = \"jit\" needs [gateway] admin_listen" in message
    with_api = '[gateway]\nadmin_listen = "tcp:8080:interface=127.0.0.1"\n'
    assert parse(with_api + connection(access='"jit"', jit_approvers='["leads"]'))


# -- the admin API's transport ---------------------------------------------------------------


@pytest.mark.parametrize(
    "listen",
    ["tcp:8443:interface=127.0.0.1", "tcp6:8443:interface=\\\\:\\\\:1", "unix:/run/hoopgw/admin"],
)
def test_admin_api_may_be_plain_on_loopback(listen):
    gateway = parse(f'[gateway]\nadmin_listen = "{listen}"\n').gateway
    assert (gateway.admin_tls, gateway.admin_allow_plaintext) == (False, False)


@pytest.mark.parametrize("listen", ["tcp:8443", "tcp:8443:interface=10.0.0.5"])
def test_admin_api_off_loopback_needs_tls_or_an_explicit_plaintext(listen, tmp_path):
    error = error_of(f'[gateway]\nadmin_listen = "{listen}"\n')
    assert error.key == "gateway.admin_listen" and "admin_tls = true" in str(error)
    allowed = parse(f'[gateway]\nadmin_listen = "{listen}"\nadmin_allow_plaintext = true\n')
    assert allowed.gateway.admin_allow_plaintext is True
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    tls = parse(
        f'[gateway]\nadmin_listen = "{listen}"\nadmin_tls = true\n'
        'tls_cert = "cert.pem"\ntls_key = "key.pem"\n',
        tmp_path,
    )
    assert tls.gateway.admin_tls is True


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("admin_tls = true", "gateway.admin_tls", "needs tls_cert and tls_key"),
        ("admin_tls = 'yes'", "gateway.admin_tls", "expected bool"),
        ("admin_allow_plaintext = 1", "gateway.admin_allow_plaintext", "expected bool"),
    ],
)
def test_admin_tls_errors_name_the_key(text, key, message):
    error = error_of(f"[gateway]\n{text}\n")
    assert error.key == key and message in str(error)


# -- network agents ---------------------------------------------------------------------------


def _agent_gateway(tmp_path, extra=""):
    (tmp_path / "cert.pem").write_text("cert")
    (tmp_path / "key.pem").write_text("key")
    return (
        "[gateway]\ntls_cert = 'cert.pem'\ntls_key = 'key.pem'\n"
        f"agent_listen = 'tcp:8444:interface=0.0.0.0'\n{extra}"
    )


def test_a_connection_via_an_agent(tmp_path):
    config = parse(_agent_gateway(tmp_path) + connection("via = 'dc1'"), tmp_path)
    assert config.gateway.agent_listen == "tcp:8444:interface=0.0.0.0"
    assert config.connections[0].via == "dc1"
    assert parse(_agent_gateway(tmp_path) + connection(), tmp_path).connections[0].via is None


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (connection("via = 'dc1'"), "via", "needs [gateway] agent_listen"),
        (
            "[gateway]\nagent_listen = 'tcp:8444'\n" + connection(),
            "gateway.agent_listen",
            "needs tls_cert and tls_key",
        ),
        (
            "[gateway]\nagent_listen = 'tcp:99999'\n" + connection(),
            "gateway.agent_listen",
            "port must be",
        ),
    ],
)
def test_agent_errors_name_the_key(text, key, message):
    error = error_of(text)
    assert error.key == key and message in str(error)


def test_via_must_be_an_agent_name(tmp_path):
    error = error_of(_agent_gateway(tmp_path) + connection("via = 'DC 1'"), tmp_path)
    assert error.key == "via" and "must be an agent name" in str(error)


def test_agent_listen_may_not_share_a_listener(tmp_path):
    text = _agent_gateway(tmp_path).replace("tcp:8444:interface=0.0.0.0", "tcp:15432")
    error = error_of(text + connection(), tmp_path)
    assert error.key == "listen" and "same address as [gateway] agent_listen" in str(error)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_a_config_file_others_may_write_is_refused(tmp_path, mode):
    path = tmp_path / "hoopgw.toml"
    path.write_text("[gateway]\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"config file {str(path)!r} is writable by group or others (mode {mode:04o}), who could"
        f" change it: chmod go-w {str(path)!r}"
    )
    path.chmod(0o644)  # readable by all is fine: the config holds references, not secrets
    assert load_config(path).connections == ()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_config_file_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "hoopgw.toml"
    path.write_text("[gateway]\n")
    os.chown(path, 4321, -1)
    with pytest.raises(ConfigError, match=r"owned by another user \(uid 4321\)"):
        load_config(path)
    os.chown(path, 0, -1)  # root's own files are trusted, as OpenSSH trusts them
    assert load_config(path).connections == ()
