"""Every error class the real server can produce, with its code and request id."""

import uuid

import pytest

import tidings_client as tc

pytestmark = pytest.mark.server


def uid():
    return f"u_{uuid.uuid4().hex[:12]}"


def check_common(error, status, code):
    assert error.status == status
    assert error.code == code
    assert error.message
    assert error.request_id and error.request_id.startswith("req_")
    assert error.headers.get("x-request-id") == error.request_id


def test_a_wrong_key_is_an_authentication_error(tidings_server):
    client = tc.Client("sk_not_a_real_key", base_url=tidings_server.url)
    with pytest.raises(tc.AuthenticationError) as info:
        client.track("E", external_id=uid())
    check_common(info.value, 401, "authentication_required")


def test_a_publishable_key_on_a_secret_endpoint_is_an_authentication_error(tidings_server):
    client = tc.Client(tidings_server.public_key, base_url=tidings_server.url)
    with pytest.raises(tc.AuthenticationError) as info:
        client.upsert_users([{"external_id": uid()}])
    check_common(info.value, 401, "authentication_required")


def test_a_low_role_is_a_permission_error(tidings_server, support_key):
    client = tc.Client(support_key, base_url=tidings_server.url)
    with pytest.raises(tc.PermissionDeniedError) as info:
        client.upsert_users([{"external_id": uid()}])
    check_common(info.value, 403, "permission_denied")


def test_an_invalid_field_is_a_validation_error_with_field_errors(tidings_server):
    client = tc.Client(tidings_server.public_key, base_url=tidings_server.url)
    with pytest.raises(tc.ValidationError) as info:
        client.identify(external_id=uid(), email="not-an-email")
    error = info.value
    check_common(error, 422, "validation_failed")
    assert [e.param for e in error.errors] == ["email"]
    assert error.errors[0].code == "parameter_invalid_format"


def test_a_malformed_timestamp_is_a_validation_error(tidings_server):
    client = tc.Client(tidings_server.public_key, base_url=tidings_server.url)
    with pytest.raises(tc.ValidationError) as info:
        client.track("E", external_id=uid(), created_at="yesterday-ish")
    check_common(info.value, 422, "validation_failed")
    assert [e.param for e in info.value.errors] == ["[0].created_at"]


def test_an_unknown_user_field_is_a_400_validation_error(tidings_server):
    client = tc.Client(tidings_server.public_key, base_url=tidings_server.url)
    with pytest.raises(tc.ValidationError) as info:
        client.track("E", external_id=uid(), user={"favouriteColour": "red"})
    check_common(info.value, 400, "parameter_unknown")
    assert info.value.param == "[0].user.favourite_colour"


def test_an_unknown_field_in_upsert_users_is_refused(tidings_server):
    # The SDK only sends known fields at the top level of its own calls; upsert_users takes
    # user mappings as given, so an unknown field reaches the server.
    client = tc.Client(tidings_server.secret_key, base_url=tidings_server.url)
    try:
        result = client.upsert_users([{"external_id": uid(), "favouriteColour": "red"}])
    except tc.ValidationError as error:  # refused for the whole request
        assert error.status == 400
        codes = [error.code, *(e.code for e in error.errors)]
    else:  # or per item
        item_error = result.results[0].error
        codes = [item_error.code, *(e.code for e in item_error.errors)]
    assert "parameter_unknown" in codes


def test_an_event_over_32_kb_is_payload_too_large(tidings_server):
    client = tc.Client(tidings_server.public_key, base_url=tidings_server.url)
    with pytest.raises(tc.PayloadTooLargeError) as info:
        client.track("Huge", {"blob": "x" * 40_000}, external_id=uid())
    check_common(info.value, 413, "payload_too_large")


def test_a_reused_idempotency_key_with_another_body_is_a_conflict(tidings_server):
    client = tc.Client(tidings_server.secret_key, base_url=tidings_server.url)
    key = uuid.uuid4().hex
    client.upsert_users([{"external_id": uid()}], idempotency_key=key)
    with pytest.raises(tc.ConflictError) as info:
        client.upsert_users([{"external_id": uid()}], idempotency_key=key)
    check_common(info.value, 409, "idempotency_key_mismatch")


def test_nothing_listening_is_a_connection_error(tidings_server):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(tc.TidingsConnectionError):
        tc.Client(tidings_server.public_key, base_url=f"http://127.0.0.1:{port}").identify(
            external_id=uid()
        )
