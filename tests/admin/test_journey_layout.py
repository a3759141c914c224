"""The journey graph layout: layers from the entrances, edges with their labels."""

from __future__ import annotations

from tidings.admin.journey_layout import BOX_H, BOX_W, layout
from tidings.domain.journeys.graph import Child, Step


def _steps(*steps: Step) -> dict[str, Step]:
    return {s.uuid: s for s in steps}


def test_steps_sit_one_layer_below_their_deepest_parent() -> None:
    steps = _steps(
        Step("in", "entrance", children=(Child("gate"),), id=1),
        Step(
            "gate", "gate", children=(Child("wait", "yes"), Child("out", "no")), id=2, name="Buyer?"
        ),
        Step("wait", "delay", children=(Child("out"),), id=3),
        Step("out", "exit", id=4),
    )
    stats = {"gate": {"entered": 5, "completed": 4, "waiting": 1, "failed": 0}}
    drawn = layout(steps, stats)
    by = {b.uuid: b for b in drawn.boxes}
    assert by["in"].y < by["gate"].y < by["wait"].y < by["out"].y  # out: below its deepest parent
    assert by["gate"].title == "Buyer?" and by["gate"].counts["entered"] == 5
    assert by["in"].counts == {}
    assert sorted(e.label or "" for e in drawn.edges) == ["", "", "no", "yes"]
    yes = next(e for e in drawn.edges if e.label == "yes")
    assert (yes.x1, yes.y1) == (by["gate"].x + BOX_W // 2, by["gate"].y + BOX_H)
    assert (yes.x2, yes.y2) == (by["wait"].x + BOX_W // 2, by["wait"].y)
    no = next(e for e in drawn.edges if e.label == "no")
    assert yes.y1 < yes.label_y < yes.y2 and no.y1 < no.label_y < no.y2
    for b in drawn.boxes:
        assert b.x >= 0 and b.x + BOX_W <= drawn.width and b.y + BOX_H <= drawn.height


def test_yes_and_no_to_the_same_step_have_their_labels_apart() -> None:
    steps = _steps(
        Step("g", "gate", children=(Child("d", "yes"), Child("d", "no")), id=1),
        Step("d", "delay", id=2),
    )
    yes, no = layout(steps).edges
    assert (yes.x1, yes.y1, yes.x2, yes.y2) == (no.x1, no.y1, no.x2, no.y2)
    assert yes.label_x + 20 < no.label_x  # "yes" left of the line, "no" right of it


def test_boxes_of_a_layer_do_not_overlap_and_long_names_are_shortened() -> None:
    steps = _steps(
        Step("in", "entrance", children=(Child("a", ratio=50), Child("b", ratio=50)), id=1),
        Step("a", "action", id=2, name="x" * 100),
        Step("b", "action", id=3),
    )
    drawn = layout(steps)
    a, b = sorted((x for x in drawn.boxes if x.uuid in "ab"), key=lambda x: x.x)
    assert a.y == b.y and a.x + BOX_W <= b.x
    assert len(next(x for x in drawn.boxes if x.uuid == "a").title) <= 26
    assert {e.label for e in drawn.edges} == {"weight 50"}


def test_a_cycle_in_a_draft_still_lays_out() -> None:
    steps = _steps(
        Step("a", "delay", children=(Child("b"),), id=1),
        Step("b", "delay", children=(Child("a"),), id=2),
    )
    drawn = layout(steps)
    assert len(drawn.boxes) == 2 and len(drawn.edges) == 2
    assert layout({}).boxes == ()
