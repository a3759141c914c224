"""OpenAPI descriptions of the raw ingest routes (they bypass FastAPI's models for speed)."""

from __future__ import annotations

from typing import Any

from tidings.api import wire

__all__ = ["add_ingest_paths", "add_segment_paths"]

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

_ERASE_ERRORS = {
    "403": _problem("The key's role is too low (erasure needs admin)"),
    "503": _problem("Not processed in time; the erasure still happens. Retry-After is set"),
}


def _document_reads(paths: dict[str, Any]) -> None:
    """FastAPI documents its own 422 for bad parameters; Tidings answers 400 problems."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "HTTPValidationError" in str(responses.get("422", "")):  # FastAPI's own only
                responses.pop("422")
            if not path.startswith("/api/client/"):
                continue  # e.g. the inbound SMS webhook: its own authentication and errors
            errors = {**_READ_ERRORS, **(_ERASE_ERRORS if method == "delete" else {})}
            for status, response in errors.items():
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
    # Beside the reporting GET of the same path (api/reporting.py).
    paths.setdefault("/api/client/events", {})["post"] = _operation(
        "Track events", _array("EventIn"), _NO_CONTENT, secret=False
    )
    paths["/api/client/identify"] = {
        "post": _operation("Identify a user", _ref("UserUpsert"), _NO_CONTENT, secret=False)
    }
    paths["/api/client/alias"] = {
        "post": _operation("Link an anonymous id", _ref("Alias"), _NO_CONTENT, secret=False)
    }
    paths["/api/client/devices"] = {
        "post": _operation("Register a device", _ref("DeviceIn"), _NO_CONTENT, secret=False)
    }
    # Beside FastAPI's own GET (list) and DELETE (bulk erase) of the same path.
    paths.setdefault("/api/client/users", {})["patch"] = _operation(
        "Upsert users", _array("UserUpsert"), _NO_CONTENT, secret=True
    )
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


def add_segment_paths(schema: dict[str, Any]) -> None:
    """The Segment tracking API (``/v1``); see docs/segment-compat.md."""
    from tidings.api import segment, segment_wire

    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["writeKey"] = {
        "type": "http",
        "scheme": "basic",
        "description": "The write key (any pk_ or sk_ key) as username, empty password; "
        "or send it as writeKey in the body.",
    }
    obj = {"type": ["object", "null"], "additionalProperties": True}
    ident = {"type": ["string", "number", "null"], "description": "A number becomes a string"}
    stamp = {"type": ["string", "null"], "format": "date-time"}
    message = {
        "type": "object",
        "additionalProperties": True,
        "description": "A Segment spec message, at most 32 KB. Unknown fields are ignored. "
        "At least one of userId or anonymousId (alias: previousId and userId).",
        "properties": {
            "type": {"enum": list(segment_wire.TYPES), "description": "Required inside a batch"},
            "userId": ident,
            "anonymousId": ident,
            "previousId": ident,
            "groupId": ident,
            "messageId": ident,
            "event": {"type": "string", "maxLength": 255, "description": "track only"},
            "name": {"type": ["string", "null"], "description": "page and screen"},
            "category": {"type": ["string", "null"], "description": "page and screen"},
            "properties": obj,
            "traits": obj,
            "context": obj,
            "timestamp": stamp,
            "originalTimestamp": stamp,
            "sentAt": stamp,
            "writeKey": {"type": "string"},
        },
    }
    schemas = components.setdefault("schemas", {})
    schemas["SegmentMessage"] = message
    schemas["SegmentBatch"] = {
        "type": "object",
        "additionalProperties": True,
        "required": ["batch"],
        "description": "At most 500 KB, also after inflating a gzip or deflate body.",
        "properties": {
            "batch": {"type": "array", "minItems": 1, "items": _ref("SegmentMessage")},
            "sentAt": stamp,
            "context": {**obj, "description": "Merged under each message's context"},
            "writeKey": {"type": "string"},
        },
    }
    schemas["SegmentOutcomes"] = {
        "type": "object",
        "required": ["results", "accepted", "rejected"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "messageId"],
                    "properties": {
                        "index": {"type": "integer"},
                        "messageId": {"type": ["string", "null"]},
                        "accepted": {"const": True},
                        "error": {"type": "object"},
                    },
                },
            },
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
        },
    }
    ok = {
        "200": {
            "description": '{"success": true} once durably committed; with ?outcomes=1 a '
            "result per message (invalid ones skipped, valid ones stored)",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["success"],
                                "additionalProperties": False,
                                "properties": {"success": {"const": True}},
                            },
                            _ref("SegmentOutcomes"),
                        ]
                    }
                }
            },
        }
    }
    errors = {
        "400": _problem("Malformed request or message (every problem listed in errors)"),
        "401": _problem("No write key, or an unknown or revoked one"),
        "413": _problem("A message over 32 KB, or a body over 500 KB (also once inflated)"),
        "415": _problem("Content-Type is not JSON, or an unsupported Content-Encoding"),
        "422": _problem("A field's value is invalid (traits.email, traits.phone, timestamps)"),
        "503": _problem("Temporarily unavailable; retry after Retry-After seconds"),
    }
    parameters = [
        {
            "name": "outcomes",
            "in": "query",
            "required": False,
            "description": "1: answer 200 with a result per message instead of refusing the "
            "whole request when a message is invalid",
            "schema": {"enum": ["1", "0", "true", "false"]},
        },
        {
            "name": "Content-Encoding",
            "in": "header",
            "required": False,
            "schema": {"enum": ["gzip", "deflate", "identity"]},
        },
    ]
    aliases = {path[-1]: path for path in segment.ROUTES if len(path) == len("/v1/t")}
    paths = schema.setdefault("paths", {})
    for path, kind in segment.ROUTES.items():
        if path in aliases.values():
            continue  # analytics.js's one-letter paths, described on the long ones
        body = _ref("SegmentBatch") if kind is None else _ref("SegmentMessage")
        alias = aliases.get(path[len("/v1/")])
        also = f" Also at {alias} (analytics.js)." if path != "/v1/import" else ""
        summary = f"Segment {path.rsplit('/', 1)[1]}"
        paths[path] = {
            "post": {
                "tags": ["segment"],
                "summary": summary,
                "description": "Segment tracking API; answers after the commit." + also,
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {**ok, **errors},
                "security": [{"writeKey": []}],
            }
        }
    _document_segment_settings(paths)


def _document_segment_settings(paths: dict[str, Any]) -> None:
    """The answers of the two configuration documents SDKs load in browsers:
    ``GET /v1/projects/{write_key}/settings`` (api/segment_settings.py, analytics.js) and
    ``GET /sourceConfig/`` (api/rudderstack_config.py)."""
    operation = paths.get("/v1/projects/{write_key}/settings", {}).get("get")
    if operation is None:
        return
    document = {
        "type": "object",
        "required": ["integrations"],
        "properties": {"integrations": {"type": "object", "required": ["Segment.io"]}},
        "additionalProperties": True,
    }
    operation["responses"] = {
        "200": {
            "description": "The settings analytics.js reads: send to this server's /v1",
            "content": {"application/json": {"schema": document}},
        },
        "400": _problem("The write key is too long"),
        "403": _problem("A secret key, or a page on an origin the project does not allow"),
        "404": _problem("No project has this write key, or it was revoked"),
        "503": _problem("Temporarily unavailable; retry after Retry-After seconds"),
    }
    rudderstack = paths.get("/sourceConfig/", {}).get("get")
    if rudderstack is not None:  # api/rudderstack_config.py
        source = {
            "type": "object",
            "required": ["source"],
            "properties": {"source": {"type": "object", "required": ["id", "destinations"]}},
            "additionalProperties": True,
        }
        rudderstack["responses"] = {
            "200": {
                "description": "The source RudderStack's SDK reads: no destinations",
                "content": {"application/json": {"schema": source}},
            },
            "400": _problem("The write key is too long"),
            "401": _problem("No write key (query writeKey or Basic credentials)"),
            "403": _problem("A secret key, or a page on an origin the project does not allow"),
            "404": _problem("No project has this write key, or it was revoked"),
            "503": _problem("Temporarily unavailable; retry after Retry-After seconds"),
        }
