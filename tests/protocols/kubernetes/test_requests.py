"""How API request paths are read: as the API server's RequestInfoFactory reads them, and
refused when they cannot be read exactly."""

from __future__ import annotations

import pytest
from hoopgw_kubernetes.requests import Unreadable, classify, exec_command, flag


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("GET", "/api/v1/namespaces/default/pods", ("list", "", "pods", "", "default", "")),
        (
            "GET",
            "/api/v1/namespaces/default/pods?watch=true",
            ("watch", "", "pods", "", "default", ""),
        ),
        ("GET", "/api/v1/watch/namespaces/default/pods", ("watch", "", "pods", "", "default", "")),
        ("GET", "/api/v1/namespaces/default/pods/web", ("get", "", "pods", "", "default", "web")),
        ("DELETE", "/api/v1/namespaces/ns/pods/web", ("delete", "", "pods", "", "ns", "web")),
        ("DELETE", "/api/v1/namespaces/ns/pods", ("deletecollection", "", "pods", "", "ns", "")),
        ("POST", "/api/v1/namespaces/ns/pods", ("create", "", "pods", "", "ns", "")),
        (
            "PUT",
            "/api/v1/namespaces/ns/pods/web/status",
            ("update", "", "pods", "status", "ns", "web"),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/ns/deployments/d",
            ("patch", "apps", "deployments", "", "ns", "d"),
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            ("get", "apps", "deployments", "scale", "ns", "d"),
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/pods/web/exec?command=ls",
            ("exec", "", "pods", "exec", "ns", "web"),
        ),
        (
            "POST",
            "/api/v1/namespaces/ns/pods/web/attach",
            ("attach", "", "pods", "attach", "ns", "web"),
        ),
        ("GET", "/api/v1/namespaces/ns/pods/web/log", ("log", "", "pods", "log", "ns", "web")),
        (
            "GET",
            "/api/v1/namespaces/ns/pods/web/portforward",
            ("portforward", "", "pods", "portforward", "ns", "web"),
        ),
        (
            "GET",
            "/api/v1/namespaces/ns/services/s/proxy/a/b",
            ("proxy", "", "services", "proxy", "ns", "s"),
        ),
        ("GET", "/api/v1/namespaces", ("list", "", "namespaces", "", "", "")),
        (
            "GET",
            "/api/v1/namespaces/kube-system",
            ("get", "", "namespaces", "", "kube-system", "kube-system"),
        ),
        (
            "PUT",
            "/api/v1/namespaces/ns/finalize",
            ("update", "", "namespaces", "finalize", "ns", "ns"),
        ),
        ("GET", "/api/v1/nodes/n1", ("get", "", "nodes", "", "", "n1")),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:admin",
            ("get", "rbac.authorization.k8s.io", "clusterroles", "", "", "system:admin"),
        ),
        ("GET", "/api", ("get", "", "", "", "", "")),
        ("GET", "/apis", ("get", "", "", "", "", "")),
        ("GET", "/api/v1", ("get", "", "", "", "", "")),
        ("GET", "/apis/apps/v1", ("get", "", "", "", "", "")),
        ("GET", "/apis/apps", ("get", "", "", "", "", "")),
        ("GET", "/version?timeout=32s", ("get", "", "", "", "", "")),
        ("GET", "/openapi/v3/api/v1", ("get", "", "", "", "", "")),
    ],
)
def test_requests_are_read_as_the_api_server_reads_them(
    method: str, target: str, expected: tuple[str, ...]
) -> None:
    request = classify(method, target)
    assert (
        request.verb,
        request.group,
        request.resource,
        request.subresource,
        request.namespace,
        request.name,
    ) == expected


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/api/v1/namespaces/%2e%2e/pods"),
        ("GET", "/api/v1/namespaces/../pods"),
        ("GET", "/api/v1//pods"),
        ("GET", "/api/v1/namespaces/default/pods/web/exec/extra"),
        ("GET", "api/v1/pods"),
        ("GET", "/api/v2/pods"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("POST", "/api"),
        ("HEAD", "/api/v1/pods"),
        ("OPTIONS", "/api/v1/pods"),
        ("CONNECT", "/api/v1/pods"),
        # Methods are case-sensitive: the API server's router serves none of these (its
        # RequestInfo reads no verb from them), so judging one as DELETE would misrecord it.
        ("delete", "/api/v1/namespaces/default/pods/web"),
        ("Get", "/api/v1/pods"),
        ("pOST", "/api/v1/namespaces/default/pods"),
        ("GET", "/api/v1/watch/namespaces/default/pods/web/log"),
        ("POST", "/api/v1/watch/pods"),
        ("GET", "/api/v1/pods\\x"),
    ],
)
def test_what_cannot_be_read_exactly_is_refused(method: str, target: str) -> None:
    with pytest.raises(Unreadable):
        classify(method, target)


def test_describe_reads_like_kubectl() -> None:
    assert classify("DELETE", "/api/v1/namespaces/default/pods/web").describe() == (
        "delete pods/web -n default"
    )
    assert classify("GET", "/apis/apps/v1/deployments").describe() == "list deployments.apps"
    assert classify("GET", "/api/v1/namespaces/a/pods/p/log").describe() == "log pods/p -n a"
    assert classify("GET", "/version").describe() == "get /version"


def test_exec_parameters() -> None:
    query = "command=sh&command=-c&command=echo+a%26b&stdin=true&tty=1&stdout=false"
    assert exec_command(query) == ["sh", "-c", "echo a&b"]
    assert flag(query, "stdin") and flag(query, "tty")
    assert not flag(query, "stdout") and not flag(query, "stderr")


@pytest.mark.parametrize(
    ("query", "stdin"),
    [
        ("stdin=yes", True),
        ("stdin=True", True),
        ("stdin", True),
        ("stdin=", True),
        ("stdin=true&stdin=false", True),
        ("stdin=FALSE", False),
        ("stdin=0&stdin=true", False),
        ("", False),
    ],
)
def test_boolean_parameters_are_read_as_the_api_server_reads_them(query: str, stdin: bool) -> None:
    # runtime.Convert_Slice_string_To_bool: the first value; only "0" and "false" are false.
    assert flag(query, "stdin") is stdin


@pytest.mark.parametrize("watch", ["watch=yes", "watch=True", "watch", "watch=1&watch=false"])
def test_any_watch_the_api_server_serves_is_a_watch(watch: str) -> None:
    assert classify("GET", f"/api/v1/namespaces/default/secrets?{watch}").verb == "watch"


@pytest.mark.parametrize(
    "query",
    [
        "command=cat;&command=rm&command=-rf&command=/",  # Go's ParseQuery drops the pair
        "command=%zz&command=rm",  # a bad escape: dropped by Go, kept by Python
        "command=%FF",  # not UTF-8: Python would read U+FFFD
    ],
)
def test_an_exec_query_go_reads_otherwise_is_refused(query: str) -> None:
    with pytest.raises(Unreadable):
        classify("GET", f"/api/v1/namespaces/ns/pods/web/exec?{query}")
