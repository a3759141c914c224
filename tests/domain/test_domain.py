"""Pure rules: trait merge, ids, partitions, authorisation."""

from __future__ import annotations

import pytest

from tidings.domain.auth import ApiKey, Role, Scope, authorize, generate_key, hash_key
from tidings.domain.errors import AuthenticationRequired, PermissionDenied
from tidings.domain.ids import new_ulid
from tidings.domain.ingest import derived_message_id, partition_of
from tidings.domain.profiles import merge_traits


def test_merge_traits_is_shallow_and_null_clears() -> None:
    current = {"plan": "pro", "seats": 3, "nested": {"a": 1}}
    assert merge_traits(current, {"seats": None, "nested": {"b": 2}, "new": 1}) == {
        "plan": "pro",
        "nested": {"b": 2},
        "new": 1,
    }
    assert current == {"plan": "pro", "seats": 3, "nested": {"a": 1}}  # not mutated


def test_ulids_are_time_ordered_and_well_formed() -> None:
    early, late = new_ulid(1_000), new_ulid(2_000)
    assert len(early) == len(late) == 26 and early < late
    assert set(early) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    assert new_ulid(1_000)[:10] == early[:10]  # the time part
    assert len({new_ulid() for _ in range(1000)}) == 1000


def test_partitions_are_stable_and_spread() -> None:
    assert partition_of(1, "u_1", 8) == partition_of(1, "u_1", 8)
    assert len({partition_of(1, f"u_{i}", 8) for i in range(200)}) == 8


def test_derived_message_ids_depend_on_key_request_and_index() -> None:
    a = derived_message_id("k", "hash1", 0)
    assert a == derived_message_id("k", "hash1", 0)
    assert len({a, derived_message_id("k", "hash1", 1), derived_message_id("k", "hash2", 0)}) == 3


def key(scope: Scope, role: Role | None = None, revoked: bool = False) -> ApiKey:
    return ApiKey(id=1, project_id=1, scope=scope, role=role, revoked=revoked)


def test_authorize() -> None:
    assert authorize(key(Scope.PUBLIC), secret=False)
    assert authorize(key(Scope.SECRET, Role.EDITOR), secret=True, role=Role.EDITOR)
    with pytest.raises(AuthenticationRequired):
        authorize(None, secret=False)
    with pytest.raises(AuthenticationRequired):
        authorize(key(Scope.PUBLIC, revoked=True), secret=False)
    with pytest.raises(AuthenticationRequired):
        authorize(key(Scope.PUBLIC), secret=True)
    with pytest.raises(PermissionDenied):
        authorize(key(Scope.SECRET, Role.SUPPORT), secret=True, role=Role.EDITOR)


def test_keys_have_prefixes_and_stable_hashes() -> None:
    public, secret = generate_key(Scope.PUBLIC), generate_key(Scope.SECRET)
    assert public.startswith("pk_") and secret.startswith("sk_") and len(secret) > 40
    assert hash_key(public) == hash_key(public) != hash_key(secret)
    assert public not in hash_key(public)
