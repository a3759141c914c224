import random
import re

import pytest

from tidings_client import _keys, snake_case
from tidings_client._keys import KEY_CACHE_SIZE, convert_keys


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


def _js_rule(key):
    """The JS SDK's rule, spelled out: key.replace(/([A-Z])/g, '_$1').toLowerCase()."""
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def test_convert_keys_matches_the_js_rule_for_many_keys():
    rng = random.Random(7)
    alphabet = "aZbYzA_09-. ÉéßΣσİıǅⒶⓐ"
    keys = ["".join(rng.choices(alphabet, k=rng.randint(0, 8))) for _ in range(3000)]
    for _ in range(2):  # the second time from the cache
        assert [snake_case(k) for k in keys] == [_js_rule(k) for k in keys]
        converted = convert_keys([{k: ({k: k},)} for k in keys])
        assert converted == [{_js_rule(k): [{_js_rule(k): k}]} for k in keys]


def test_key_cache_is_bounded_and_skips_keys_without_capitals():
    _keys._convert_key.cache_clear()
    for i in range(KEY_CACHE_SIZE * 3):
        assert snake_case(f"someKey{i}") == f"some_key{i}"
        assert snake_case(f"plain_key_{i}") == f"plain_key_{i}"  # no capital: no cache slot
    info = _keys._convert_key.cache_info()
    assert info.maxsize == KEY_CACHE_SIZE
    assert info.currsize == KEY_CACHE_SIZE  # evicted, not grown: 3x as many keys were seen
    assert info.misses == KEY_CACHE_SIZE * 3
    convert_keys({"lifetimeValue": 1, "nested": {"lifetimeValue": 2}})
    assert snake_case("lifetimeValue") == "lifetime_value"
    assert _keys._convert_key.cache_info().hits == info.hits + 2  # repeated keys are not redone


def test_converted_keys_are_plain_strings_and_containers_are_copies():
    class Key(str):
        pass

    props = {Key("plan"): (1, [2]), Key("seatCount"): {"a": None}}
    converted = convert_keys(props)
    assert converted == {"plan": [1, [2]], "seat_count": {"a": None}}
    assert all(type(k) is str for k in converted)  # as str.lower() returned them
    assert converted["seat_count"] is not props[Key("seatCount")]
