"""The base of the analyser's hand-written value types.

They are written out rather than made by ``@dataclass(frozen=True, slots=True)`` because
the dataclass ``__init__`` stays interpreted Python in the compiled build and was ~14 % of
the analyser's time on real traffic (docs/benchmarks.md). Each type keeps its own
``__slots__``, ``__init__`` and ``_key()`` (its fields in constructor order); this base
gives them what a frozen dataclass would: ``==`` and hash by ``_key()``, a ``repr`` that
names the fields, and pickling by the constructor (a compiled class is not made without
its ``__init__``'s arguments, and the gateway pickles its classifier to its DNS workers
and flow records back).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Value"]


class Value:
    __slots__ = ()
    #: the constructor's parameter names, in ``_key()``'s order (for ``repr``)
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[object, ...]:
        """The fields in constructor order (the types here spell theirs out, typed)."""
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Value)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[type[Value], tuple[object, ...]]:
        return (type(self), self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self._key(), strict=True))
        return f"{type(self).__name__}({fields})"
