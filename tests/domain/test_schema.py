"""Type inference for the data schema."""

from __future__ import annotations

from tidings.domain.schema import MAX_DEPTH, infer_paths, type_of


def test_types() -> None:
    assert type_of(True) == "boolean" and type_of(0) == "number" and type_of(1.5) == "number"
    assert type_of("x") == "string" and type_of([1]) == "array" and type_of(None) is None
    assert type_of("2026-01-02") == "date"
    assert type_of("2026-04-30T08:15:00.000Z") == "date"
    assert type_of("2026-04-30 08:15") == "date"
    assert type_of("2026-13-45") == "string"  # the shape of a date, but not one
    assert type_of("20260102") == "string"


def test_paths_walk_objects_not_arrays_and_skip_nulls() -> None:
    data = {"a": {"b": {"c": 1}}, "list": [{"x": 1}], "gone": None}
    assert infer_paths(data) == [("a.b.c", "number"), ("list", "array")]


def test_depth_is_bounded() -> None:
    deep: dict = {}
    node = deep
    for _ in range(MAX_DEPTH + 3):
        node["k"] = {}
        node = node["k"]
    node["leaf"] = 1
    ((path, kind),) = infer_paths(deep)
    assert path.count(".") == MAX_DEPTH - 1 and kind == "object"
