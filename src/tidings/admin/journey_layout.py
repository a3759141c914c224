"""A journey's step graph laid out for drawing: a pure function from steps to boxes and
edges, in layers from the entrances down (a step sits one layer below its deepest parent).

The admin draws the result as SVG in a template, so every text goes through Jinja's
escaping; this module only computes positions and shortens labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tidings.domain.journeys.graph import Step

__all__ = ["BOX_H", "BOX_W", "Box", "Edge", "Layout", "layout"]

BOX_W = 190
BOX_H = 66
GAP_X = 30
GAP_Y = 56
MARGIN = 12
LABEL = 26  # characters of a box's title before an ellipsis


@dataclass(frozen=True, slots=True)
class Box:
    uuid: str
    x: int
    y: int
    type: str
    title: str
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int
    label: str | None  # "yes", "no", "weight 50" or None
    label_x: int = 0
    label_y: int = 0


@dataclass(frozen=True, slots=True)
class Layout:
    width: int
    height: int
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= LABEL else text[: LABEL - 1] + "…"


def _depths(steps: Mapping[str, Step]) -> dict[str, int]:
    """Longest distance from a root; cycles (possible in a draft) are cut after len(steps)
    rounds, so the result is always finite."""
    depth = dict.fromkeys(steps, 0)
    for _ in range(len(steps)):
        changed = False
        for step in steps.values():
            for child in step.children:
                if child.uuid in depth and depth[child.uuid] < depth[step.uuid] + 1:
                    depth[child.uuid] = min(depth[step.uuid] + 1, len(steps))
                    changed = True
        if not changed:
            break
    return depth


def layout(
    steps: Mapping[str, Step], stats: Mapping[str, Mapping[str, int]] | None = None
) -> Layout:
    """Boxes per step (type, name, its counts from ``stats``) and edges to children."""
    depth = _depths(steps)
    layers: dict[int, list[str]] = {}
    # Entrances first, then the order steps were stored in: stable from one view to the next.
    order = sorted(steps.values(), key=lambda s: (s.type != "entrance", s.id, s.uuid))
    for step in order:
        layers.setdefault(depth[step.uuid], []).append(step.uuid)
    position: dict[str, tuple[int, int]] = {}
    widest = max((len(v) for v in layers.values()), default=0)
    full = widest * BOX_W + max(widest - 1, 0) * GAP_X
    for level in sorted(layers):
        row = layers[level]
        if level > 0:  # under their parents, as far as the order allows
            row.sort(key=lambda u: _parent_x(u, steps, position))
        span = len(row) * BOX_W + (len(row) - 1) * GAP_X
        left = MARGIN + (full - span) // 2
        for i, uuid in enumerate(row):
            position[uuid] = (left + i * (BOX_W + GAP_X), MARGIN + level * (BOX_H + GAP_Y))
    boxes = []
    edges = []
    for step in order:
        x, y = position[step.uuid]
        name = step.name or ""
        boxes.append(
            Box(
                uuid=step.uuid,
                x=x,
                y=y,
                type=_short(step.type),
                title=_short(name) if name else "",
                counts=dict((stats or {}).get(step.uuid, {})),
            )
        )
        for child in step.children:
            if child.uuid not in position:
                continue
            cx, cy = position[child.uuid]
            label = child.path or (f"weight {child.ratio}" if child.ratio is not None else None)
            x1, y1, x2, y2 = x + BOX_W // 2, y + BOX_H, cx + BOX_W // 2, cy
            # "yes" left of its line, anything else right: two paths to one child stay legible.
            shift = -26 if child.path == "yes" else 6
            edges.append(
                Edge(x1, y1, x2, y2, label, (x1 + x2) // 2 + shift, y1 + (y2 - y1) * 2 // 5)
            )
    height = MARGIN * 2 + (max(layers, default=-1) + 1) * (BOX_H + GAP_Y) - (GAP_Y if layers else 0)
    return Layout(full + 2 * MARGIN, max(height, 0), tuple(boxes), tuple(edges))


def _parent_x(
    uuid: str, steps: Mapping[str, Step], position: Mapping[str, tuple[int, int]]
) -> float:
    xs = [
        position[s.uuid][0]
        for s in steps.values()
        if s.uuid in position and any(c.uuid == uuid for c in s.children)
    ]
    return sum(xs) / len(xs) if xs else float("inf")
