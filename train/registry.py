"""A name -> constructor registry, the size of torchvision's, shared by models, losses and data."""
from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a CLI name to a constructor. Raises on duplicates and on unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> List[str]:
        """Public names (CLI choices). Names starting with "_" are private entries that tests
        register; ``get`` finds them, listings do not show them."""
        return sorted(n for n in self._entries if not n.startswith("_"))

    def __contains__(self, name: str) -> bool:
        return name in self._entries
