"""The console's SAML sign-in as a person uses it: a real chromium goes to pysaml2's IdP (run by
the test, keys made here), comes back with a signed assertion posted to the console's ACS (a
cross-site POST: the sign-in's binding cookie is SameSite=None), and the approver approves the
statement an agent's psycopg session is held on, which then completes.
"""

from __future__ import annotations

import importlib.util
import shutil
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration

helpers: Any = sys.modules["hoopgw_tests_approvals_helpers"]
DELETE = "DELETE FROM orders WHERE id = 8"


def _load(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


browser_helper = _load("hoopgw_tests_browser", Path(__file__).with_name("browser.py"))
samlidp = _load(
    "hoopgw_tests_samlidp", Path(__file__).parents[1] / "plugins" / "saml" / "samlidp.py"
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    why = browser_helper.missing()
    if why or shutil.which("xmlsec1") is None:
        pytest.skip(why or "xmlsec1 is missing (./dev setup installs it)")
    opened = browser_helper.Browser(tmp_path / "browser")
    try:
        yield opened
    finally:
        opened.close()


def test_an_approver_signs_in_with_saml_and_approves(
    gateway_document: Any,
    pg_server: Any,
    pg_database: str,
    tls_files: Any,
    tmp_path: Path,
    browser: Any,
) -> None:
    with psycopg.connect(
        host=pg_server.host,
        port=pg_server.port,
        user="postgres",
        dbname=pg_database,
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO orders VALUES (8, 'order 8') ON CONFLICT DO NOTHING")
    idp = samlidp.TestIdp(tmp_path / "idp", listen=True)
    idp.people = {"alice": ["dba"]}
    admin_port = helpers.free_port()
    url = f"https://localhost:{admin_port}"

    def document(workdir: Path, port: int) -> dict[str, Any]:
        return {
            "roles": {"approver": ["dba"]},
            "gateway": {
                "store": f"sqlite:///{workdir / 'hoopgw.db'}",
                "admin_listen": f"tcp:{admin_port}:interface=127.0.0.1",
                "admin_tls": True,
                "tls_cert": str(tls_files.server_cert),
                "tls_key": str(tls_files.server_key),
            },
            "console": {
                "public_url": url,
                "saml": {"idp_metadata": str(idp.metadata_file), "label": "Sign in with SAML"},
            },
            "connections": [
                {
                    "name": "orders",
                    "protocol": "postgres",
                    "listen": f"tcp:{port}:interface=127.0.0.1",
                    "target": f"{pg_server.host}:{pg_server.port}",
                    "allow_groups": ["agents"],
                    "plugins": ["recording", "approval"],
                    "credential": {"user": "postgres"},
                    "client_tls": "disabled",
                    "approval": {"review": ["write"], "approvers": ["dba"], "timeout": 120},
                }
            ],
        }

    running = gateway_document(document)
    try:
        context = ssl.create_default_context(cafile=str(tls_files.ca_cert))

        def metadata() -> str | None:
            try:
                with urllib.request.urlopen(f"{url}/console/saml/metadata", context=context) as a:
                    return str(a.read().decode())
            except OSError:  # the admin listener starts after the connections
                return None

        idp.trust(helpers.wait_for(metadata, what="the console's SAML metadata"))
        idp.serve(sp_entity_id=f"{url}/console/saml/metadata", acs_url=f"{url}/console/saml/acs")
        agent_key = running.create_key("agent", ["agents"])
        held = browser_helper.Held(
            f"host={running.host} port={running.port} user=agent password={agent_key}"
            f" dbname={pg_database} sslmode=disable",
            DELETE,
        )
        browser.get(f"{url}/console/reviews")
        browser.wait_for(lambda: "/console/login" in browser.url, what="the sign-in page")
        browser.find("ul.providers a").click()
        browser.wait_for(lambda: browser.find_all("input[name=login]"), what="the IdP")
        browser.find("input[name=login]").send_keys("alice")
        browser.find("#sign-in").click()
        browser.wait_for(lambda: browser.find_all("#continue"), what="the IdP's answer")
        browser.find("#continue").click()
        browser.wait_for(lambda: browser.url.startswith(f"{url}/console/reviews"), what="back")
        browser.wait_for_text("alice")
        browser.wait_for_text(DELETE, timeout=30)
        browser.find("article.review button.approve").click()
        held.join()
        assert held.error is None, held.error
        assert held.rowcount == 1
    finally:
        idp.stop()
