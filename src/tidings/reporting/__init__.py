"""Event reads, aggregations, rollups and exports (docs/reporting.md)."""
