"""OpenAPI descriptions of the raw ingest routes (they bypass FastAPI's models for speed)."""

from __future__ import annotations

from typing import Any

from tidings.api import wire

__all__ = ["add_ingest_paths"]

_ID = {"type": ["string", "null"], "minLength": 1, "maxLength": 255}
_STR = {"type": ["string", "null"], "minLength": 1, "maxLength": 255}
_DATA = {"type": ["object", "null"], "additionalProperties": True}

_TRAITS: dict[str, Any] = {
    "email": {"type": ["string", "null"], "format": "email", "maxLength": 320},
    "phone": {"type": ["string", "null"], "description": "E.164, or national with a locale"},
    "timezone": {"type": ["string", "null"], "maxLength": 50, "description": "IANA name"},
    "locale": {"type": ["string", "null"], "maxLength": 255, "description": "BCP-47 tag"},
    "data": _DATA,
}

SCHEMAS: dict[str, Any] = {
    "EventIn": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "description": "At least one of external_id or anonymous_id; at most 32 KB.",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "anonymous_id": _ID,
            "external_id": _ID,
            "data": _DATA,
            "user": {
                "type": ["object", "null"],
                "additionalProperties": False,
                "properties": _TRAITS,
            },
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "message_id": _STR,
        },
    },
    "UserUpsert": {
        "type": "object",
        "additionalProperties": False,
        "description": "At least one of external_id or anonymous_id.",
        "properties": {"anonymous_id": _ID, "external_id": _ID, **_TRAITS},
    },
    "Alias": {
        "type": "object",
        "additionalProperties": False,
        "required": ["anonymous_id", "external_id"],
        "properties": {
            "anonymous_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "external_id": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    },
    "DeviceIn": {
        "type": "object",
        "additionalProperties": False,
        "required": list(wire.DEVICE_REQUIRED),
        "properties": {
            "anonymous_id": _ID,
            "external_id": _ID,
            "device_id": {"type": "string", "minLength": 1, "maxLength": 255},
            "token": {"type": ["string", "null"], "maxLength": 4096},
            "os": {"type": "string", "minLength": 1, "maxLength": 255},
            "os_version": _STR,
            "model": {"type": "string", "minLength": 1, "maxLength": 255},
            "app_build": {"type": "string", "minLength": 1, "maxLength": 255},
            "app_version": {"type": "string", "minLength": 1, "maxLength": 255},
            "sdk_version": _STR,
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["results", "succeeded", "failed"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index"],
                    "properties": {
                        "index": {"type": "integer"},
                        "external_id": {"type": "string"},
                        "anonymous_id": {"type": "string"},
                        "user": {"$ref": "#/components/schemas/User"},
                        "error": {"type": "object"},
                    },
                },
            },
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
        },
    },
    "Problem": {
        "type": "object",
        "required": ["status", "code", "message", "error", "request_id"],
        "properties": {
            "status": {"const": "error"},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "error": {"type": "string"},
            "title": {"type": "string"},
            "type": {"type": "string"},
            "request_id": {"type": "string"},
            "param": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "param": {"type": "string"},
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                    },
                },
            },
        },
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(name: str) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "maxItems": wire.MAX_ITEMS, "items": _ref(name)}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


_ERRORS = {
    "400": _problem("Malformed request"),
    "401": _problem("Missing, unknown or revoked key, or the wrong key scope"),
    "403": _problem("The key's role is too low"),
    "409": _problem("Idempotency-Key conflict"),
    "413": _problem("Too many items, an event over 32 KB or a body over 1 MB"),
    "415": _problem("Content-Type is not application/json"),
    "422": _problem("A field's value is invalid (email, phone, time zone, locale, timestamp)"),
    "503": _problem("Temporarily unavailable; retry after Retry-After seconds"),
}

_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    {
        "name": "Spotzee-Version",
        "in": "header",
        "required": False,
        "description": "API version date sent by Spotzee SDKs; any YYYY-MM-DD date is accepted.",
        "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    },
]


def _operation(
    summary: str, body: dict[str, Any], ok: dict[str, Any], *, secret: bool
) -> dict[str, Any]:
    return {
        "tags": ["ingest"],
        "summary": summary,
        "description": ("Secret key (sk_…) only. " if secret else "Public or secret key. ")
        + "Answers only after the items are durably committed to the ingest log.",
        "parameters": _HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {**ok, **_ERRORS},
        "security": [{"bearer": []}],
    }


_NO_CONTENT = {"204": {"description": "Durably accepted"}}


_READ_ERRORS = {
    "400": _problem("A malformed query parameter"),
    "401": _problem("Missing, unknown or revoked key, or a public key"),
    "404": _problem("No such user"),
}


def _document_reads(paths: dict[str, Any]) -> None:
    """FastAPI documents its own 422 for bad parameters; Tidings answers 400 problems."""
    for path, operations in paths.items():
        if not path.startswith("/api/client/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, response in _READ_ERRORS.items():
                responses.setdefault(status, response)
            operation.setdefault("security", [{"bearer": []}])


def add_ingest_paths(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(SCHEMAS)
    components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
    paths = schema.setdefault("paths", {})
    _document_reads(paths)
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    paths["/api/client/events"] = {
        "post": _operation("Track events", _array("EventIn"), _NO_CONTENT, secret=False)
    }
    paths["/api/client/identify"] = {
        "post": _operation("Identify a user", _ref("UserUpsert"), _NO_CONTENT, secret=False)
    }
    paths["/api/client/alias"] = {
        "post": _operation("Link an anonymous id", _ref("Alias"), _NO_CONTENT, secret=False)
    }
    paths["/api/client/devices"] = {
        "post": _operation("Register a device", _ref("DeviceIn"), _NO_CONTENT, secret=False)
    }
    paths["/api/client/users"] = {
        "patch": _operation("Upsert users", _array("UserUpsert"), _NO_CONTENT, secret=True)
    }
    paths["/api/client/users/batch"] = {
        "post": _operation(
            "Upsert users synchronously, with a result per item",
            {**_array("UserUpsert"), "minItems": 1},
            {
                "200": {
                    "description": "One result per item, in request order",
                    "content": {"application/json": {"schema": _ref("BatchResult")}},
                }
            },
            secret=True,
        )
    }
