"""A non-2xx answer becomes the right TidingsError, with everything the server said."""

import httpx
import pytest

import tidings_client as tc
from tidings_client._http import error_from_response
from tidings_client.testing import problem_response


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "parameter_unknown", tc.ValidationError),
        (401, "authentication_required", tc.AuthenticationError),
        (403, "permission_denied", tc.PermissionDeniedError),
        (404, "resource_missing", tc.NotFoundError),
        (409, "state_conflict", tc.ConflictError),
        (413, "payload_too_large", tc.PayloadTooLargeError),
        (415, "unsupported_media_type", tc.APIError),
        (422, "validation_failed", tc.ValidationError),
        (429, "rate_limited", tc.RateLimitedError),
        (500, "internal_error", tc.ServerError),
        (503, "service_unavailable", tc.ServerError),
    ],
)
def test_status_families_map_to_classes(status, code, cls):
    error = error_from_response(problem_response(status, code, "went wrong"))
    assert type(error) is cls
    assert isinstance(error, tc.APIError)
    assert isinstance(error, tc.TidingsError)
    assert (error.status, error.code, error.message) == (status, code, "went wrong")
    assert error.request_id.startswith("req_")


def test_validation_errors_carry_field_errors_and_param():
    response = problem_response(
        422,
        "validation_failed",
        "1 field is invalid",
        param="[0].user.email",
        errors=[{"param": "[0].user.email", "code": "parameter_invalid_format", "message": "bad"}],
    )
    error = error_from_response(response)
    assert isinstance(error, tc.ValidationError)
    assert error.param == "[0].user.email"
    assert error.errors == [tc.FieldError("[0].user.email", "parameter_invalid_format", "bad")]


def test_rate_limited_carries_retry_after():
    response = problem_response(429, "rate_limited", "slow down", headers={"Retry-After": "7"})
    error = error_from_response(response)
    assert isinstance(error, tc.RateLimitedError)
    assert error.retry_after == 7


def test_request_id_falls_back_to_the_header_and_message_to_legacy_error():
    response = httpx.Response(
        500, json={"error": "legacy text"}, headers={"X-Request-Id": "req_FROMHEADER"}
    )
    error = error_from_response(response)
    assert (error.message, error.request_id, error.code) == ("legacy text", "req_FROMHEADER", None)


def test_a_body_that_is_not_json_still_makes_an_error():
    error = error_from_response(httpx.Response(502, content=b"<html>Bad gateway</html>"))
    assert isinstance(error, tc.ServerError)
    assert error.message == "Bad Gateway"
    assert error.body == "<html>Bad gateway</html>"


def test_str_reads_like_the_js_sdk_message():
    error = error_from_response(problem_response(401, "authentication_required", "Bad key"))
    assert str(error).startswith(
        "HTTP 401 | code=authentication_required | Bad key | request_id=req_"
    )
