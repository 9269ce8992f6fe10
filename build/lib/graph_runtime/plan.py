"""The dependency graph of a prompt: ancestors, topological order and cycles, all iterative.

Edges run from a link's source node to the node that reads it. Orders and ancestor sets are
plain-dict passes (Kahn's algorithm, a stack walk), which keeps 10,000-node prompts well under a
tenth of a second; networkx names the strongly connected components when a cycle exists.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import networkx as nx


class DependencyGraph:
    """Nodes (in prompt order) and, per node, the distinct nodes it reads from."""

    def __init__(self, nodes: Iterable[str] = ()) -> None:
        self.preds: dict[str, list[str]] = {node: [] for node in nodes}

    def add_edge(self, source: str, target: str) -> None:
        """Record that ``target`` reads ``source``; both must be nodes of the graph."""
        sources = self.preds[target]
        if source not in sources:
            sources.append(source)

    def ancestors(self, targets: Iterable[str]) -> set[str]:
        """The targets and everything upstream of them."""
        preds = self.preds
        seen = set(targets)
        stack = list(seen)
        while stack:
            for parent in preds[stack.pop()]:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    def order(self, nodes: set[str]) -> tuple[list[str], set[str]]:
        """A topological order of ``nodes`` (ties in prompt order) and the nodes left on or behind a cycle."""
        preds = self.preds
        waiting: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        for node in self.preds:
            if node in nodes:
                inside = [p for p in preds[node] if p in nodes]
                waiting[node] = len(inside)
                for parent in inside:
                    children.setdefault(parent, []).append(node)
        position = {n: i for i, n in enumerate(waiting)}
        ready = [(position[n], n) for n, count in waiting.items() if count == 0]  # already a heap: sorted
        order: list[str] = []
        while ready:
            _, node = heapq.heappop(ready)
            order.append(node)
            for child in children.get(node, ()):
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (position[child], child))
        return order, nodes.difference(order)

    def cycles(self, nodes: set[str]) -> list[list[str]]:
        """The cycles among ``nodes``: strongly connected components of more than one node, or self-loops."""
        graph: nx.DiGraph = nx.DiGraph()
        graph.add_edges_from((p, n) for n in nodes for p in self.preds[n] if p in nodes)
        return [
            sorted(component, key=id_order)
            for component in nx.strongly_connected_components(graph)
            if len(component) > 1 or any(graph.has_edge(n, n) for n in component)
        ]


def id_order(node_id: str) -> tuple[int, int | str]:
    """Sort numeric ids numerically, then the others by text."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)
