"""Stored rows → the JSON shapes of the wire contract."""

from __future__ import annotations

from typing import Any

from tidings.domain.fields import format_timestamp

__all__ = ["iso", "present_event", "present_profile"]


def iso(micros: int | None) -> str | None:
    return None if micros is None else format_timestamp(micros)


def present_profile(profile: dict[str, Any]) -> dict[str, Any]:
    shown = dict(profile)
    shown["created_at"] = iso(profile["created_at"])
    shown["updated_at"] = iso(profile["updated_at"])
    shown["anonymous_id"] = profile["anonymous_ids"][0] if profile["anonymous_ids"] else None
    shown["merge_rejections"] = [
        {**r, "created_at": iso(r["created_at"])} for r in profile.get("merge_rejections", [])
    ]
    shown["devices"] = [
        {**d, "created_at": iso(d["created_at"]), "updated_at": iso(d["updated_at"])}
        for d in profile["devices"]
    ]
    # Spotzee's generated client types expect both: a device with a push token.
    shown["has_push_device"] = any(d.get("token") for d in profile["devices"])
    return shown


def present_event(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "created_at": iso(event["created_at"])}
