"""A workflow's DAG laid out in layers for an SVG drawing, left to right.

A step's layer is the length of the longest dependency path from a root (a step with no
dependencies) to it, so every edge points to a later column. Within a column, steps are ordered
by the mean row of their dependencies (the barycentre heuristic, one pass), which keeps parallel
branches next to what feeds them and most edges from crossing; ties keep the definition order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.status import StepStatus

NODE_WIDTH = 176
NODE_HEIGHT = 56
COLUMN_GAP = 56
ROW_GAP = 20
PADDING = 12
LABEL_CHARS = 20


class CycleError(ValueError):
    """The steps' dependencies form a cycle, so they have no layered drawing."""


@dataclass(frozen=True)
class GraphStep:
    key: str
    depends_on: tuple[str, ...] = ()
    agent: str = ""
    status: str = StepStatus.PENDING


@dataclass(frozen=True)
class PlacedStep:
    key: str
    label: str
    agent: str
    status: str
    layer: int
    row: int
    x: int
    y: int
    width: int = NODE_WIDTH
    height: int = NODE_HEIGHT

    @property
    def centre_x(self) -> int:
        return self.x + self.width // 2


@dataclass(frozen=True)
class PlacedEdge:
    source: str
    target: str
    path: str
    status: str


@dataclass(frozen=True)
class Layout:
    nodes: tuple[PlacedStep, ...]
    edges: tuple[PlacedEdge, ...]
    width: int
    height: int


def layers(depends_on: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Each step's layer: 0 for roots, else 1 + the largest layer of its dependencies.
    Dependencies on unknown steps are ignored; a cycle raises ``CycleError``."""
    waiting = {key: {p for p in parents if p in depends_on and p != key} for key, parents in depends_on.items()}
    for key, parents in depends_on.items():
        if key in parents:
            raise CycleError(f"step '{key}' depends on itself")
    children: dict[str, list[str]] = {key: [] for key in depends_on}
    for key, pending in waiting.items():
        for parent in pending:
            children[parent].append(key)
    result = {key: 0 for key, pending in waiting.items() if not pending}
    ready = list(result)
    while ready:  # Kahn's order: a step is placed once all its dependencies are
        key = ready.pop()
        for child in children[key]:
            result[child] = max(result.get(child, 0), result[key] + 1)
            waiting[child].discard(key)
            if not waiting[child]:
                ready.append(child)
    stuck = [key for key, parents in waiting.items() if parents]
    if stuck:
        raise CycleError(f"the dependencies of step '{stuck[0]}' form a cycle")
    return result


def order_rows(steps: Sequence[GraphStep], layer_of: Mapping[str, int]) -> dict[str, int]:
    """The row of each step within its layer (barycentre of its dependencies' rows, then definition order)."""
    position = {step.key: i for i, step in enumerate(steps)}
    by_layer: dict[int, list[GraphStep]] = {}
    for step in steps:
        by_layer.setdefault(layer_of[step.key], []).append(step)
    rows: dict[str, int] = {}
    for layer in sorted(by_layer):
        members = by_layer[layer]

        def weight(step: GraphStep) -> tuple[float, int]:
            placed = [rows[p] for p in step.depends_on if p in rows]
            centre = sum(placed) / len(placed) if placed else float(position[step.key])
            return centre, position[step.key]

        if layer > 0:
            members = sorted(members, key=weight)
        for row, step in enumerate(members):
            rows[step.key] = row
    return rows


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def layout(steps: Sequence[GraphStep], *, vertical: bool = False) -> Layout:
    """Place every step and route every edge as a curve: layers as columns (left to right), or as
    rows (top to bottom) when ``vertical``, for narrow screens; each layer centred on the widest."""
    if not steps:
        return Layout((), (), 2 * PADDING, 2 * PADDING)
    layer_of = layers({s.key: s.depends_on for s in steps})
    rows = order_rows(steps, layer_of)
    counts: dict[int, int] = {}
    for layer in layer_of.values():
        counts[layer] = counts.get(layer, 0) + 1
    widest = max(counts.values())
    depth = max(layer_of.values()) + 1
    # Along a layer, nodes are ``across`` apart; layers are ``along`` apart.
    across = (NODE_WIDTH + COLUMN_GAP // 2) if vertical else (NODE_HEIGHT + ROW_GAP)
    along = (NODE_HEIGHT + COLUMN_GAP) if vertical else (NODE_WIDTH + COLUMN_GAP)
    nodes: dict[str, PlacedStep] = {}
    for step in steps:
        layer = layer_of[step.key]
        offset = (widest - counts[layer]) * across // 2 + rows[step.key] * across
        x, y = (offset, layer * along) if vertical else (layer * along, offset)
        nodes[step.key] = PlacedStep(
            key=step.key,
            label=_label(step.key),
            agent=_label(step.agent),
            status=step.status,
            layer=layer,
            row=rows[step.key],
            x=PADDING + x,
            y=PADDING + y,
        )
    edges = tuple(
        _edge(nodes[parent], nodes[step.key], vertical)
        for step in steps
        for parent in step.depends_on
        if parent in nodes
    )
    span_across = widest * across - (across - (NODE_WIDTH if vertical else NODE_HEIGHT))
    span_along = depth * along - (along - (NODE_HEIGHT if vertical else NODE_WIDTH))
    width, height = (span_across, span_along) if vertical else (span_along, span_across)
    return Layout(tuple(nodes[s.key] for s in steps), edges, width + 2 * PADDING, height + 2 * PADDING)


def _edge(source: PlacedStep, target: PlacedStep, vertical: bool) -> PlacedEdge:
    """A cubic curve from ``source``'s outgoing side to ``target``'s incoming side."""
    if vertical:
        x1, y1 = source.x + source.width // 2, source.y + source.height
        x2, y2 = target.x + target.width // 2, target.y
        bend = max((y2 - y1) // 2, 16)
        path = f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}"
    else:
        x1, y1 = source.x + source.width, source.y + source.height // 2
        x2, y2 = target.x, target.y + target.height // 2
        bend = max((x2 - x1) // 2, 16)
        path = f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
    return PlacedEdge(source.key, target.key, path, source.status)
