"""Segments: rule compilation to SQL for back-fills (and, later, incremental membership
state and window expiry). The rule tree itself lives in ``tidings.domain.rules``."""

from tidings.segments.compile import compile_rule

__all__ = ["compile_rule"]
