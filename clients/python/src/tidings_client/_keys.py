"""camelCase → snake_case key conversion, exactly as Spotzee's JS SDK does it.

The rule is ``key.replace(/([A-Z])/g, '_$1').toLowerCase()``: every ASCII capital
letter gets an underscore in front and the key is lower-cased. It is applied to the keys
of every mapping, recursively through mappings and lists; values are never touched.
Consequences worth knowing: ``userID`` → ``user_i_d``, ``URL`` → ``_u_r_l``,
``already_snake`` → ``already_snake``. Pass ``convert_keys=False`` to a client to send
keys exactly as given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["convert_keys", "snake_case"]

_CAPITAL = re.compile(r"([A-Z])")


def snake_case(key: str) -> str:
    """Convert one key: ``lifetimeValue`` → ``lifetime_value``, ``userID`` → ``user_i_d``."""
    return _CAPITAL.sub(r"_\1", key).lower()


def convert_keys(value: Any) -> Any:
    """Return ``value`` with every mapping key converted, through nested mappings and lists."""
    if isinstance(value, Mapping):
        return {
            (snake_case(k) if isinstance(k, str) else k): convert_keys(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [convert_keys(v) for v in value]
    return value
