"""The journey engine: entrances, timers, step execution (docs/journeys.md)."""
