"""The log consumer: identity → profile → event, one transaction per batch."""
