"""Name -> class registries; an unknown name fails listing the valid ones (lmms-eval style)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any


class UnknownNameError(KeyError):
    """Raised for a name that is not in a registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError repr-quotes its message otherwise
        return str(self.args[0])


class Registry:
    """A mapping from a short name (used in configs and output files) to a class or factory."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            obj.registry_name = name
            return obj

        return deco

    def get(self, name: str) -> Any:
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Valid names: {', '.join(sorted(self._items))}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
