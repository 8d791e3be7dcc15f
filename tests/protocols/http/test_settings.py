"""The ``[connections.http]`` table: declared by the protocol, validated by the one config
loader, checked against the rest of the connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from hoopgw_http.protocol import describe
from hoopgw_http.settings import HttpOptions, HttpSettings

from hoopgw.config.load import Config, load_config, parse_config
from hoopgw.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]

CONNECTION = """
[[connections]]
name = "api"
protocol = "http"
listen = "tcp:18080:interface=127.0.0.1"
target = "api.internal:{port}"
allow_groups = ["agents"]
credential = {{ user = "svc", password = "env:HOOPGW_TEST_API_TOKEN" }}
upstream_tls = {{ sslmode = "{sslmode}" }}
{extra}
"""


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOPGW_TEST_API_TOKEN", "s3cret-token")


def parse(extra: str = "", *, sslmode: str = "disable", port: int = 80) -> Config:
    text = CONNECTION.format(extra=extra, sslmode=sslmode, port=port)
    return parse_config(text, base_dir=Path("/etc/hoopgw"))


def settings(extra: str = "", **kwargs: object) -> HttpSettings:
    return HttpSettings.of(parse(extra, **kwargs).connections[0])  # type: ignore[arg-type]


def test_defaults() -> None:
    config = parse()
    options = config.connections[0].protocol_options
    assert options == HttpOptions()
    chosen = HttpSettings.of(config.connections[0])
    assert chosen.host_header == "api.internal" and not chosen.tls
    assert chosen.inspected(b"application/json; charset=utf-8")
    assert chosen.inspected(b"application/problem+json") and chosen.inspected(None)
    assert not chosen.inspected(b"image/png")


def test_the_host_header_keeps_a_port_that_is_not_the_default() -> None:
    assert settings(port=8080).host_header == "api.internal:8080"
    assert settings('[connections.http]\nhost_header = "orders"').host_header == "orders"


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ("[connections.http]\nauthh = 'x'", "http.authh", "unknown option"),
        ("[connections.http]\nauth = 'digest'", "http.auth", "one of"),
        ("[connections.http]\nauth = 'header'", "http.auth_header", "required"),
        ("[connections.http]\nauth_header = 'X-Key'", "http.auth_header", "only with"),
        (
            "[connections.http]\nauth = 'header'\nauth_header = 'Host'",
            "http.auth_header",
            "sets itself",
        ),
        ("[connections.http]\nclient_cert = '/x.pem'", "http.client_key", "together"),
        ("[connections.http]\nmax_inspected_body = 0", "http.max_inspected_body", "greater"),
        ("[connections.http]\ninspect_types = ['json']", "http.inspect_types", "media types"),
    ],
)
def test_option_errors_name_the_key(extra: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        parse(extra)
    assert exc.value.key == key and exc.value.connection == "api"


@pytest.mark.parametrize("sslmode", ["prefer", "require"])
def test_an_unverified_https_target_is_refused(sslmode: str) -> None:
    config = parse(sslmode=sslmode)
    with pytest.raises(ConfigError, match="verify-full") as exc:
        describe(config.connections[0])  # what `hoopgw config check` runs
    assert exc.value.key == "upstream_tls.sslmode"


def test_a_credential_kind_needs_the_secret() -> None:
    text = CONNECTION.format(
        extra="[connections.http]\nauth = 'bearer'", sslmode="disable", port=80
    )
    text = text.replace(', password = "env:HOOPGW_TEST_API_TOKEN"', "")
    with pytest.raises(ConfigError, match=r"credential\.password"):
        parse_config(text, base_dir=Path("/etc/hoopgw"))


def test_a_client_certificate_must_be_readable(tmp_path: Path) -> None:
    extra = (
        f"[connections.http]\nclient_cert = '{tmp_path}/no.pem'\nclient_key = '{tmp_path}/no.key'"
    )
    with pytest.raises(ConfigError, match="cannot read") as exc:
        parse(extra)
    assert exc.value.key == "http.client_cert"


def test_the_http_table_is_refused_on_other_protocols() -> None:
    text = CONNECTION.format(
        extra="[connections.http]\nauth = 'bearer'", sslmode="disable", port=80
    )
    text = text.replace('protocol = "http"', 'protocol = "postgres"')
    with pytest.raises(ConfigError, match=r'only for connections with protocol = "http"'):
        parse_config(text, base_dir=Path("/etc/hoopgw"))


def test_the_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_API_TOKEN", "example")
    config = load_config(REPO / "examples" / "http.toml")
    [api] = config.connections
    assert describe(api)["credential"] == "bearer"
    rules = api.plugin_options["guardrails"]["http_rules"]
    assert any(rule["action"] == "review" for rule in rules)
