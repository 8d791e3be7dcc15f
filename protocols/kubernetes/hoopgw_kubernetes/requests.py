"""What a Kubernetes API request asks for: verb, resource, namespace, name.

The API server reads a request path the same way (``k8s.io/apiserver/pkg/endpoints/request``,
``RequestInfoFactory``): ``/api/v1/...`` for the core group, ``/apis/GROUP/VERSION/...`` for the
others, then ``namespaces/NS/RESOURCE/NAME/SUBRESOURCE`` or ``RESOURCE/NAME/SUBRESOURCE``. The
verb comes from the method and the path: ``GET`` of a collection is ``list`` (``watch`` with
``?watch=true``), ``DELETE`` of one is ``deletecollection``. The streaming subresources
(``exec``, ``attach``, ``portforward``, ``proxy``, ``log``) are verbs of their own here, so a
policy names them as it names ``get`` or ``delete``.

Anything else fails closed: :func:`classify` raises :class:`Unreadable` for a path the gateway
cannot read exactly as the API server would (percent-escapes, empty or dot segments, unknown
prefixes, a method the API does not use), and the gateway refuses the request.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import attrs

__all__ = [
    "STREAMING_VERBS",
    "ApiRequest",
    "Unreadable",
    "classify",
    "exec_command",
    "flag",
    "parameter",
]

STREAMING_VERBS = frozenset({"exec", "attach", "portforward", "proxy", "log"})
"""Subresources judged as verbs of their own."""
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")
"""Paths outside the resource tree the gateway reads (discovery, versions, health, OpenAPI)."""

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


class Unreadable(ValueError):
    """A request the gateway cannot read as the API server would; it is refused."""


@attrs.frozen(kw_only=True)
class ApiRequest:
    """One API request, as a policy reads it."""

    method: str
    """The HTTP method (upper case: no other is read)."""
    path: str
    """The request path (without the query)."""
    query: str
    """The raw query string, forwarded as it is."""
    verb: str
    """``get``, ``list``, ``watch``, ``create``, ``update``, ``patch``, ``delete``,
    ``deletecollection``, or a streaming subresource (:data:`STREAMING_VERBS`)."""
    group: str = ""
    """API group (``""`` for the core group and for paths outside the resource tree)."""
    version: str = ""
    """API version (``v1``)."""
    resource: str = ""
    """Resource (``pods``); ``""`` for discovery and other paths outside the resource tree."""
    subresource: str = ""
    """Subresource (``status``, ``scale``, ``exec``, ...), or ``""``."""
    namespace: str = ""
    """Namespace, or ``""`` for cluster-scoped requests."""
    name: str = ""
    """Object name, or ``""`` for a collection."""

    @property
    def is_resource(self) -> bool:
        """Whether the request names a resource (not discovery, health or OpenAPI)."""
        return bool(self.resource)

    def describe(self) -> str:
        """The request in a line as a person reads it: ``delete pods/web -n default``."""
        if not self.is_resource:
            return f"{self.verb} {self.path}"
        what = self.resource
        if self.group:
            what += f".{self.group}"
        if self.name:
            what += f"/{self.name}"
        if self.subresource and self.subresource != self.verb:
            what += f"/{self.subresource}"
        return f"{self.verb} {what}" + (f" -n {self.namespace}" if self.namespace else "")

    def facts(self) -> dict[str, str]:
        """The fields a policy matches, for :attr:`hoopgw.session.Command.details`."""
        return {
            "method": self.method,
            "path": self.path,
            "verb": self.verb,
            "group": self.group,
            "version": self.version,
            "resource": self.resource,
            "subresource": self.subresource,
            "namespace": self.namespace,
            "name": self.name,
        }


def _segments(path: str) -> list[str]:
    if not path.startswith("/") or "%" in path or "\\" in path:
        raise Unreadable(f"path {path!r} is not a plain absolute path")
    parts = path[1:].split("/")
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash, as the API server allows
    for part in parts:
        if not _SEGMENT.fullmatch(part):
            raise Unreadable(f"path {path!r} has an empty, dot or unexpected segment")
    return parts


def classify(method: str, target: str) -> ApiRequest:
    """Read ``method`` and the request ``target`` (path and query) of one API request.

    :raises Unreadable: when it cannot be read exactly as the API server reads it.
    """
    path, _, query = target.partition("?")
    if "#" in target:
        raise Unreadable("a request target holds no fragment")
    if method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        # Case-sensitive (RFC 9110 section 9.1), as the API server's router: ``delete`` is
        # not DELETE, and what is forwarded is the method judged.
        raise Unreadable(f"method {method} is not one the Kubernetes API serves")
    parts = _segments(path)
    params = _parameters(query)
    if not parts:
        raise Unreadable("path / is outside the Kubernetes API")
    if not (
        (parts[0] == "api" and (len(parts) < 2 or parts[1] == "v1"))
        or (parts[0] == "apis" and len(parts) >= 3)
    ):
        # /api/VERSION other than v1 does not exist; /apis/GROUP is the group's discovery.
        known = parts[0] != "api" and ("/" + parts[0]) in DISCOVERY_PREFIXES
        if not known:
            raise Unreadable(f"path {path!r} is outside the Kubernetes API")
        if method != "GET":
            raise Unreadable(f"{method} {path} is not an API request")
        return ApiRequest(method=method, path=path, query=query, verb="get")
    if parts[0] == "api":
        group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:  # a group version's resource list
        if method != "GET":
            raise Unreadable(f"{method} {path} is not an API request")
        return ApiRequest(method=method, path=path, query=query, verb="get", version=version)
    watch_prefix = rest[0] == "watch"
    if watch_prefix:  # the deprecated /watch/ paths
        rest = rest[1:]
        if not rest or method != "GET":
            raise Unreadable(f"{method} {path}: a watch path needs a resource and GET")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        namespace = rest[1]
        # /namespaces/NAME, /namespaces/NAME/status and /finalize are the namespace itself.
        if len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3 and subresource != "proxy":
        raise Unreadable(f"path {path!r} is longer than resource/name/subresource")
    if subresource in STREAMING_VERBS:
        verb = subresource
    elif method == "GET":
        watching = watch_prefix or _true(params.get("watch", []))
        verb = "watch" if watching else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS[method]
    if watch_prefix and verb != "watch":
        raise Unreadable(f"path {path!r}: a watch path of a subresource")
    return ApiRequest(
        method=method,
        path=path,
        query=query,
        verb=verb,
        group=group,
        version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def _parameters(query: str) -> dict[str, list[str]]:
    """The query's parameters as Go's ``url.ParseQuery`` reads them, in order.

    Go drops a pair holding ``;`` or a bad escape, and keeps bytes that are not UTF-8, where
    Python would keep, or replace, them: such a query is refused, not read differently.
    """
    params: dict[str, list[str]] = {}
    for pair in query.split("&") if query else []:
        if ";" in pair or _BAD_ESCAPE.search(pair):
            raise Unreadable(f"query parameter {pair!r} is not one the API server reads")
        key, _, value = pair.partition("=")
        try:
            key, value = (
                unquote_to_bytes(part.replace("+", " ")).decode("utf-8") for part in (key, value)
            )
        except UnicodeDecodeError:
            raise Unreadable(f"query parameter {pair!r} is not UTF-8") from None
        params.setdefault(key, []).append(value)
    return params


def _true(values: list[str]) -> bool:
    # The API server's boolean parameters (runtime.Convert_Slice_string_To_bool): the first
    # value counts, and only "0" or "false" (any case) is false; "yes" or "" is true.
    return bool(values) and values[0] != "0" and values[0].lower() != "false"


def exec_command(query: str) -> list[str]:
    """The argument vector of an exec request (its repeated ``command`` parameters).

    :raises Unreadable: for a query :func:`classify` refuses.
    """
    return _parameters(query).get("command", [])


def flag(query: str, name: str) -> bool:
    """Whether the API server reads the boolean parameter ``name`` as true (``stdin=true``,
    ``tty=1``, and also ``stdin=yes`` or a bare ``stdin``).

    :raises Unreadable: for a query :func:`classify` refuses.
    """
    return _true(_parameters(query).get(name, []))


def parameter(query: str, name: str) -> str:
    """The API server's value of the string parameter ``name`` (the first), or ``""``.

    :raises Unreadable: for a query :func:`classify` refuses.
    """
    return next(iter(_parameters(query).get(name, [])), "")
