"""camelCase → snake_case key conversion, exactly as Spotzee's JS SDK does it.

The rule is ``key.replace(/([A-Z])/g, '_$1').toLowerCase()``: every ASCII capital
letter gets an underscore in front and the key is lower-cased. It is applied to the keys
of every mapping, recursively through mappings and lists; values are never touched.
Consequences worth knowing: ``userID`` → ``user_i_d``, ``URL`` → ``_u_r_l``,
``already_snake`` → ``already_snake``. Pass ``convert_keys=False`` to a client to send
keys exactly as given.

Speed: a key with no capital letter (``str.islower()``) is kept as it is, without any work;
the conversion of other keys is cached (at most ``KEY_CACHE_SIZE`` distinct keys, least
recently used evicted), since an application sends the same few property names again and
again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["KEY_CACHE_SIZE", "convert_keys", "snake_case"]

_CAPITAL = re.compile(r"([A-Z])")

KEY_CACHE_SIZE = 4096
"""Distinct converted keys remembered; keys with no capital letter never take a slot."""

# Values that are never converted (neither mappings nor lists): skipped without a call.
_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _convert_key(key: str) -> str:
    return _CAPITAL.sub(r"_\1", key).lower()


def snake_case(key: str) -> str:
    """Convert one key: ``lifetimeValue`` → ``lifetime_value``, ``userID`` → ``user_i_d``."""
    if type(key) is str and key.islower():
        return key  # no upper-case letter (ASCII or not): the rule changes nothing
    return _convert_key(key)


def convert_keys(value: Any) -> Any:
    """Return ``value`` with every mapping key converted, through nested mappings and lists."""
    if isinstance(value, Mapping):
        converted: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and not (type(k) is str and k.islower()):
                k = _convert_key(k)
            converted[k] = v if type(v) in _SCALARS else convert_keys(v)
        return converted
    if isinstance(value, list | tuple):
        return [v if type(v) in _SCALARS else convert_keys(v) for v in value]
    return value
