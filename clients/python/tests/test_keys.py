import pytest

from tidings_client import snake_case
from tidings_client._keys import convert_keys


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("lifetimeValue", "lifetime_value"),
        ("seatsAllocated", "seats_allocated"),
        ("userID", "user_i_d"),  # exactly like Spotzee's JS SDK, not "user_id"
        ("URL", "_u_r_l"),
        ("FirstName", "_first_name"),
        ("already_snake", "already_snake"),
        ("plan", "plan"),
        ("postCode2", "post_code2"),
        ("", ""),
        ("ÉtéCount", "été_count"),  # only ASCII capitals get an underscore
    ],
)
def test_snake_case_follows_the_js_rule(key, expected):
    assert snake_case(key) == expected


def test_convert_keys_recurses_through_dicts_and_lists_but_not_values():
    value = {
        "shippingAddress": {"postCode": "3000"},
        "lineItems": [{"skuCode": "A"}, "keepMe", ["nestedList", {"innerKey": 1}]],
        "note": "camelCaseValue",
    }
    assert convert_keys(value) == {
        "shipping_address": {"post_code": "3000"},
        "line_items": [{"sku_code": "A"}, "keepMe", ["nestedList", {"inner_key": 1}]],
        "note": "camelCaseValue",
    }


def test_convert_keys_leaves_non_string_keys_and_scalars():
    assert convert_keys({1: {"aB": 2}}) == {1: {"a_b": 2}}
    assert convert_keys(5) == 5
    assert convert_keys(None) is None
