"""The admin API's OpenAPI 3.1 document, served at ``/api/openapi.json``.

The document is the contract: tests validate every response the API gives against the schema of
its operation and status, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from hoopgw import __version__

_TIME = {"type": ["number", "null"], "description": "POSIX time (seconds since 1970, UTC)"}
_STRINGS = {"type": "array", "items": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "The request is malformed or a value is invalid."),
    "401": _json(_ref("Error"), "No valid bearer token."),
    "403": _json(_ref("Error"), "The caller may not do this."),
    "404": _json(_ref("Error"), "No such object (or the caller may not see it)."),
    "409": _json(_ref("Error"), "The object's state does not allow it (decided already, ...)."),
}

_REVIEW_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": [
                            "invalid",
                            "unauthenticated",
                            "forbidden",
                            "not_found",
                            "conflict",
                            "method_not_allowed",
                            "internal",
                        ],
                    },
                    "message": {"type": "string"},
                },
            }
        },
    },
    "Vote": {
        "type": "object",
        "required": ["identity", "approve", "reason", "decided_at"],
        "additionalProperties": False,
        "properties": {
            "identity": {"type": "string"},
            "approve": {"type": "boolean"},
            "reason": {"type": "string"},
            "decided_at": {"type": "number"},
        },
    },
    "Review": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "kind",
            "status",
            "requester",
            "requester_groups",
            "connection",
            "reason",
            "approvers",
            "required",
            "approvals",
            "votes",
            "created_at",
        ],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
            "kind": {"type": "string", "enum": ["statement", "access"]},
            "status": {
                "type": "string",
                "enum": ["pending", "approved", "denied", "withdrawn", "aborted", "expired"],
            },
            "requester": {"type": "string"},
            "requester_groups": _STRINGS,
            "connection": {"type": "string"},
            "reason": {"type": "string", "description": "why held, or why access is asked for"},
            "approvers": {**_STRINGS, "description": "groups whose members may decide"},
            "required": {"type": "integer", "minimum": 1},
            "approvals": {"type": "integer", "minimum": 0},
            "votes": {"type": "array", "items": _ref("Vote")},
            "created_at": {"type": "number"},
            "session_id": {"type": "string"},
            "command_seq": {"type": "integer"},
            "statement": {"type": "string"},
            "parameters": {
                "type": "array",
                "items": {"type": ["string", "null"]},
                "description": "statement: the bind parameter values it runs with, in order"
                " (masked when masking is on; null is SQL NULL). The approval covers them: the"
                " same statement with other values needs its own review",
            },
            "hold_until": _TIME,
            "timed_out_at": _TIME,
            "valid_for": {"type": "number"},
            "valid_until": _TIME,
            "used_at": _TIME,
            "duration": {"type": ["number", "null"], "description": "access: seconds asked for"},
            "decided_at": _TIME,
            "decided_by": {"type": "string"},
            "decision_reason": {"type": "string"},
            "grant_id": {"type": "string"},
            "instance": {
                "type": "string",
                "description": "the gateway instance holding the statement or that took the"
                " request (empty with a SQLite store)",
            },
            "decision_recorded_at": {
                **_TIME,
                "description": "when the decision's audit record was durable",
            },
        },
    },
    "Grant": {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "review_id",
            "identity",
            "connection",
            "reason",
            "approved_by",
            "created_at",
            "expires_at",
            "status",
        ],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
            "review_id": {"type": "string"},
            "identity": {"type": "string"},
            "connection": {"type": "string"},
            "reason": {"type": "string"},
            "approved_by": _STRINGS,
            "created_at": {"type": "number"},
            "expires_at": {"type": "number"},
            "status": {"type": "string", "enum": ["active", "expired", "revoked"]},
            "revoked_at": _TIME,
            "revoked_by": {"type": "string"},
            "revoke_reason": {"type": "string"},
            "ended_at": _TIME,
        },
    },
    "WhoAmI": {
        "type": "object",
        "additionalProperties": False,
        "required": ["identity", "groups", "roles", "method"],
        "properties": {
            "identity": {"type": "string"},
            "groups": _STRINGS,
            "roles": {
                "type": "array",
                "items": {"type": "string", "enum": ["approver", "auditor", "admin"]},
            },
            "method": {"type": "string"},
        },
    },
    "Decision": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {"type": "string", "maxLength": 2000}},
    },
    "Denial": {
        "type": "object",
        "additionalProperties": False,
        "required": ["reason"],
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 2000}},
    },
    "AccessRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["connection", "duration", "reason"],
        "properties": {
            "connection": {"type": "string"},
            "duration": {"type": "number", "exclusiveMinimum": 0, "description": "seconds"},
            "reason": {"type": "string", "minLength": 1, "maxLength": 2000},
        },
    },
}


SCHEMAS["Reload"] = {
    "type": "object",
    "required": ["added", "removed", "changed", "ended_sessions"],
    "additionalProperties": False,
    "properties": {
        "added": {**_STRINGS, "description": "Connections added."},
        "removed": {**_STRINGS, "description": "Connections removed (their sessions ended)."},
        "changed": {
            "type": "object",
            "description": "Each changed connection with the keys (and plugin tables) that"
            " changed.",
            "additionalProperties": _STRINGS,
        },
        "ended_sessions": {
            **_STRINGS,
            "description": "Live sessions the new config no longer allows, ended.",
        },
        "workers": {
            "type": "object",
            "description": "With [gateway] workers only: the workers that applied the reload,"
            " those that refused it (worker -> why), restarted with the new config.",
            "required": ["applied", "refused", "restarted"],
            "additionalProperties": False,
            "properties": {
                "applied": {"type": "array", "items": {"type": "integer"}},
                "refused": {"type": "object", "additionalProperties": {"type": "string"}},
                "restarted": {"type": "array", "items": {"type": "integer"}},
            },
        },
    },
}

_SESSION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "A live session's id, or at least its first 8 characters.",
    "schema": {"type": "string", "pattern": "^[0-9a-f-]{8,36}$"},
}

SCHEMAS["LiveSession"] = {
    "type": "object",
    "required": ["id", "identity", "connection", "protocol", "client_address", "started_at"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "identity": {"type": "string"},
        "connection": {"type": "string"},
        "protocol": {"type": "string"},
        "client_address": {"type": "string"},
        "started_at": _TIME,
        "pending_review": {
            "description": "The review the session's statement waits for, or null.",
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["id", "approvers", "hold_until", "reason"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "approvers": {"type": "array", "items": {"type": "string"}},
                        "hold_until": _TIME,
                        "reason": {"type": "string"},
                    },
                },
            ],
        },
    },
}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


PATHS: dict[str, Any] = {
    "/api/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document.",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
        }
    },
    "/api/whoami": {
        "get": {
            "operationId": "whoAmI",
            "summary": "The caller's identity, groups and roles.",
            "responses": {"200": _json(_ref("WhoAmI"), "The caller."), "401": _ERRORS["401"]},
        }
    },
    "/api/reviews": {
        "get": {
            "operationId": "listReviews",
            "summary": "Reviews the caller may see, newest first.",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {
                        "type": "string",
                        "enum": [
                            "pending",
                            "approved",
                            "denied",
                            "withdrawn",
                            "aborted",
                            "expired",
                        ],
                    },
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["reviews"],
                        "additionalProperties": False,
                        "properties": {"reviews": {"type": "array", "items": _ref("Review")}},
                    },
                    "The reviews.",
                ),
                "400": _ERRORS["400"],
                "401": _ERRORS["401"],
            },
        }
    },
    "/api/reviews/{id}": {
        "get": {
            "operationId": "getReview",
            "summary": "One review with its votes.",
            "parameters": [_REVIEW_ID],
            "responses": {
                "200": _json(_ref("Review"), "The review."),
                "401": _ERRORS["401"],
                "404": _ERRORS["404"],
            },
        }
    },
    "/api/reviews/{id}/approve": {
        "post": {
            "operationId": "approveReview",
            "summary": "Approve a pending review (not your own; only as a member of its approver"
            " groups). The held statement runs once the approvals needed are in.",
            "parameters": [_REVIEW_ID],
            "requestBody": _body("Decision"),
            "responses": {
                "200": _json(_ref("Review"), "The review after the approval."),
                **_ERRORS,
            },
        }
    },
    "/api/reviews/{id}/deny": {
        "post": {
            "operationId": "denyReview",
            "summary": "Deny a pending review, with a reason the requester is shown.",
            "parameters": [_REVIEW_ID],
            "requestBody": _body("Denial"),
            "responses": {"200": _json(_ref("Review"), "The review after the denial."), **_ERRORS},
        }
    },
    "/api/access/requests": {
        "post": {
            "operationId": "requestAccess",
            "summary": 'Ask for time-bound access to a connection with access = "jit".',
            "requestBody": _body("AccessRequest"),
            "responses": {
                "201": _json(_ref("Review"), "The access review, pending."),
                "400": _ERRORS["400"],
                "401": _ERRORS["401"],
                "403": _ERRORS["403"],
                "404": _ERRORS["404"],
            },
        }
    },
    "/api/access/grants": {
        "get": {
            "operationId": "listGrants",
            "summary": "Grants: the caller's own, or every grant for holders of a role.",
            "parameters": [
                {"name": "active", "in": "query", "schema": {"type": "string", "enum": ["1"]}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["grants"],
                        "additionalProperties": False,
                        "properties": {"grants": {"type": "array", "items": _ref("Grant")}},
                    },
                    "The grants.",
                ),
                "400": _ERRORS["400"],
                "401": _ERRORS["401"],
            },
        }
    },
    "/api/access/grants/{id}/revoke": {
        "post": {
            "operationId": "revokeGrant",
            "summary": "End a grant now; its sessions are ended. Allowed to admins, the"
            " connection's jit_approvers and the grantee.",
            "parameters": [_REVIEW_ID],
            "requestBody": _body("Decision"),
            "responses": {"200": _json(_ref("Grant"), "The revoked grant."), **_ERRORS},
        }
    },
    "/api/sessions/live": {
        "get": {
            "operationId": "listLiveSessions",
            "summary": "Live sessions, oldest first: every one for admins and auditors, the"
            " caller's own for anyone else.",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["sessions"],
                        "additionalProperties": False,
                        "properties": {"sessions": {"type": "array", "items": _ref("LiveSession")}},
                    },
                    "The live sessions.",
                ),
                "401": _ERRORS["401"],
            },
        }
    },
    "/api/reload": {
        "post": {
            "operationId": "reloadConfig",
            "summary": "Read the gateway's config file again and apply it without dropping the"
            " sessions it still allows (admins only; audited as config_reloaded). An invalid"
            " config is refused (400, the errors in the message; audited as"
            " config_reload_refused) and the running one stays.",
            "responses": {
                "200": _json(_ref("Reload"), "What changed, and the sessions it ended."),
                **_ERRORS,
            },
        }
    },
    "/api/sessions/{id}/terminate": {
        "post": {
            "operationId": "terminateSession",
            "summary": "End a live session now (admins only). The termination is audited"
            " before the session ends; the client is told who ended it and why.",
            "parameters": [_SESSION_ID],
            "requestBody": _body("Decision"),
            "responses": {
                "200": _json(_ref("LiveSession"), "The session, as it was when ended."),
                **_ERRORS,
            },
        }
    },
}


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hoopgw admin API",
            "version": __version__,
            "description": "Reviews of held statements and just-in-time access. Authenticate"
            " with `Authorization: Bearer <API key or OIDC token>`. See docs/admin-api.md.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }
