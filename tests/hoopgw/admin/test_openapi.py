"""The OpenAPI document: well-formed, its schemas valid, and every route of the API in it."""

from __future__ import annotations

import json
import re

import jsonschema

from hoopgw.admin import openapi
from hoopgw.admin.api import AdminApi


def _refs(value: object) -> list[str]:
    return re.findall(r'"\$ref": "([^"]+)"', json.dumps(value))


def test_every_schema_is_valid_json_schema_and_every_ref_resolves() -> None:
    document = openapi.document()
    assert document["openapi"].startswith("3.1")
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    names = set(document["components"]["schemas"])
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in names, ref


def test_every_route_is_documented_and_nothing_else() -> None:
    routes = AdminApi(service=None, authenticator=None, reactor=None)._routes  # type: ignore[arg-type]
    documented = {
        (method.upper(), path)
        for path, operations in openapi.document()["paths"].items()
        for method in operations
    }
    served = set()
    for method, pattern, _, _ in routes:
        path = re.sub(r"\([^)]*\)", "{id}", pattern.pattern.replace(r"\.", "."))
        served.add((method, path))
    assert served == documented


def test_only_the_document_itself_is_public() -> None:
    paths = openapi.document()["paths"]
    public = [p for p, ops in paths.items() for op in ops.values() if op.get("security") == []]
    assert public == ["/api/openapi.json"]
    routes = AdminApi(service=None, authenticator=None, reactor=None)._routes  # type: ignore[arg-type]
    assert [p.pattern for _, p, _, auth in routes if not auth] == [r"/api/openapi\.json"]
