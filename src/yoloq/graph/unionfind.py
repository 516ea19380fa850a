"""A union-find over hashable items, shared by the torch dataflow and the ONNX lint."""

from __future__ import annotations

from collections.abc import Hashable


class UnionFind:
    """Disjoint sets of hashable items (path halving); an item is added on first use."""

    def __init__(self):
        self.parent: dict = {}

    def find(self, item: Hashable):
        self.parent.setdefault(item, item)
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: Hashable, b: Hashable) -> None:
        """Join the sets of `a` and `b`; the root of `b`'s set stays the root."""
        self.parent[self.find(a)] = self.find(b)

    def sets(self) -> list[list]:
        found: dict = {}
        for item in self.parent:
            found.setdefault(self.find(item), []).append(item)
        return list(found.values())

    def roots(self) -> dict:
        """{item: root of its set} for every item seen."""
        return {item: self.find(item) for item in list(self.parent)}
