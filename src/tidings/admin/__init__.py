"""The server-rendered admin UI at /admin (docs/admin.md)."""
