"""The ingest log: a port, its adapters, and the group committer in front of them."""
