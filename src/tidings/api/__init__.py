"""The HTTP edge: the app factory, ingest routes, reads, errors and auth."""
