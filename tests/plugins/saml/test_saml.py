"""The SAML sign-in plugin against pysaml2's own IdP (keys made here, signatures by xmlsec1):
a signed assertion for our request is accepted; an unsigned, tampered, unsolicited or
misaddressed one is refused."""

from __future__ import annotations

import base64
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from twisted.internet import task

from hoopgw.errors import ConfigError
from hoopgw.signin import LoginAttempt

if shutil.which("xmlsec1") is None:
    pytest.skip("xmlsec1 is missing (./dev setup installs it)", allow_module_level=True)

from hoopgw_saml import SamlSignIn, install


def _load(name: str, file_name: str) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file_name))
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


samlidp = _load("hoopgw_tests_samlidp", "samlidp.py")
BASE = "https://gw.example.com/console"


class Host:
    """A console as the plugin sees it."""

    base_url = BASE

    def __init__(self, folder: Path) -> None:
        self.base_dir = folder
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.routes: dict[tuple[str, str], Any] = {}
        self.listed: list[tuple[str, str, str]] = []
        self.begun: list[tuple[LoginAttempt, str, bool]] = []

    def route(self, method: str, pattern: str, handler: Any) -> None:
        self.routes[(method, pattern)] = handler

    def add_sign_in(self, provider: str, label: str, path: str) -> None:
        self.listed.append((provider, label, path))

    def begin_sign_in(self, attempt: LoginAttempt, url: str, *, cross_site_post: bool) -> Any:
        self.begun.append((attempt, url, cross_site_post))
        return url

    def answer(self, body: bytes, content_type: str) -> Any:
        return (body, content_type)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Any, SamlSignIn, Host]:
    idp = samlidp.TestIdp(tmp_path / "idp")
    host = Host(tmp_path)
    saml = SamlSignIn(host, {"idp_metadata": str(idp.metadata_file)})
    body, _ = saml.metadata(None).result
    idp.trust(body.decode() if isinstance(body, bytes) else body)
    return idp, saml, host


def _begin(saml: SamlSignIn, host: Host, idp: Any) -> tuple[LoginAttempt, str]:
    saml.begin(None)
    attempt, url, cross_site_post = host.begun[-1]
    assert cross_site_post  # the IdP POSTs back: the binding cookie must come along
    request_id, relay_state = idp.request_id(url)
    assert request_id == attempt.request_id and relay_state == attempt.state
    return attempt, url


def _answer(idp: Any, saml: SamlSignIn, request_id: str, **overrides: Any) -> str:
    options = {
        "in_response_to": request_id,
        "name": "alice",
        "groups": ["dba", "ops"],
        "sp_entity_id": saml.entity_id,
        "acs_url": saml.acs_url,
        **overrides,
    }
    return idp.response(**options)


def test_install_serves_the_routes_and_lists_the_method(tmp_path: Path) -> None:
    idp = samlidp.TestIdp(tmp_path / "idp")
    host = Host(tmp_path)
    install(host, {"idp_metadata": str(idp.metadata_file), "label": "Sign in with Entra"})
    assert set(host.routes) == {
        ("GET", "/login/saml"),
        ("POST", "/saml/acs"),
        ("GET", "/saml/metadata"),
    }
    assert host.listed == [("saml", "Sign in with Entra", "/console/login/saml")]


def test_the_authn_request_goes_to_the_idp(setup: Any) -> None:
    idp, saml, host = setup
    _, url = _begin(saml, host, idp)
    assert url.startswith(f"{idp.base_url}/sso?SAMLRequest=")


def test_a_signed_assertion_for_our_request_names_the_person_and_groups(setup: Any) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    identity = saml.identity_of(_answer(idp, saml, attempt.request_id), attempt.request_id)
    assert identity.name == "alice"
    assert identity.groups == {"dba", "ops"}
    assert identity.method == "saml"


def test_an_unsigned_assertion_is_refused(setup: Any) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    unsigned = _answer(idp, saml, attempt.request_id, sign_assertion=False)
    with pytest.raises(Exception, match="Signature missing for assertion"):
        saml.identity_of(unsigned, attempt.request_id)


@pytest.mark.parametrize(
    ("before", "after"),
    [(b">dba<", b">admins<"), (b">alice<", b">mallory<")],
    ids=["groups", "name"],
)
def test_a_tampered_assertion_is_refused(setup: Any, before: bytes, after: bytes) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    signed = base64.b64decode(_answer(idp, saml, attempt.request_id))
    assert before in signed
    tampered = base64.b64encode(signed.replace(before, after)).decode()
    with pytest.raises(Exception, match="Failed to verify signature"):
        saml.identity_of(tampered, attempt.request_id)


def test_an_answer_to_another_request_is_refused(setup: Any) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    other, _ = _begin(saml, host, idp)
    answer = _answer(idp, saml, other.request_id)
    with pytest.raises(Exception, match="Unsolicited response"):
        saml.identity_of(answer, attempt.request_id)


def test_an_unsolicited_response_is_refused(setup: Any) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    answer = _answer(idp, saml, "")
    with pytest.raises(Exception, match="Unsolicited response"):
        saml.identity_of(answer, attempt.request_id)


def test_an_assertion_for_another_audience_is_refused(setup: Any) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    answer = _answer(idp, saml, attempt.request_id, sp_entity_id="https://other.example/sp")
    with pytest.raises(Exception, match="AudienceRestrictions"):
        saml.identity_of(answer, attempt.request_id)


def test_an_assertion_for_another_recipient_is_refused(setup: Any) -> None:
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    answer = _answer(idp, saml, attempt.request_id, acs_url="https://other.example/acs")
    with pytest.raises(Exception, match="no usable assertion"):
        saml.identity_of(answer, attempt.request_id)


def test_options_are_checked(tmp_path: Path) -> None:
    host = Host(tmp_path)
    with pytest.raises(ConfigError, match=r"console\.saml\.idp_metadata"):
        SamlSignIn(host, {})
    with pytest.raises(ConfigError, match=r"console\.saml\.colour"):
        SamlSignIn(host, {"idp_metadata": "x", "colour": "red"})
    with pytest.raises(ConfigError, match="no such file"):
        SamlSignIn(host, {"idp_metadata": str(tmp_path / "missing.xml")})


def test_an_assertion_for_another_request_rewrapped_is_refused(setup: Any) -> None:
    # A captured assertion (signed for request A) in a new, unsigned Response that names the
    # attacker's own request B: the signed SubjectConfirmationData still names A.
    idp, saml, host = setup
    victim, _ = _begin(saml, host, idp)
    attacker, _ = _begin(saml, host, idp)
    signed = base64.b64decode(_answer(idp, saml, victim.request_id)).decode()
    mark = f'InResponseTo="{victim.request_id}"'
    assert signed.count(mark) == 2  # the Response's (unsigned) and the assertion's (signed)
    rewrapped = signed.replace(mark, f'InResponseTo="{attacker.request_id}"', 1)
    with pytest.raises(Exception, match="Unsolicited response"):
        saml.identity_of(base64.b64encode(rewrapped.encode()).decode(), attacker.request_id)


def test_a_comment_in_the_name_id_does_not_cut_the_name(setup: Any) -> None:
    # Canonicalization drops comments, so the signature still holds; the name must be whole.
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    answer = _answer(idp, saml, attempt.request_id, name="admin.evil")
    signed = base64.b64decode(answer)
    assert signed.count(b">admin.evil<") == 1
    commented = signed.replace(b">admin.evil<", b">admin<!---->.evil<")
    identity = saml.identity_of(base64.b64encode(commented).decode(), attempt.request_id)
    assert identity.name == "admin.evil"


def test_a_response_with_a_document_type_is_refused(setup: Any, tmp_path: Path) -> None:
    # An external entity (XXE) or an entity bomb in the posted XML is never expanded.
    idp, saml, host = setup
    attempt, _ = _begin(saml, host, idp)
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    signed = base64.b64decode(_answer(idp, saml, attempt.request_id)).decode()
    start = signed.index("?>") + 2
    doctype = f'<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
    hostile = signed[:start] + doctype + signed[start:].replace(">alice<", ">&x;<", 1)
    with pytest.raises(Exception, match="EntitiesForbidden"):
        saml.identity_of(base64.b64encode(hostile.encode()).decode(), attempt.request_id)
