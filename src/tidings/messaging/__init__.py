"""Campaigns, templates, providers, the outbox and tracking (docs/messaging.md)."""
