"""The tables of the messaging area, on the shared metadata of store/tables.py
(which imports this module, so that migrations and their tests see one schema)."""

from __future__ import annotations

__all__: list[str] = []
