"""The admin web UI at ``/admin``: server-rendered pages over the stores (docs/admin.md)."""

from tidings.admin.app import admin_app

__all__ = ["admin_app"]
