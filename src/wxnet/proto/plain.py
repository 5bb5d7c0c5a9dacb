"""The base of the small read-only value types of modules that are never compiled.

The same as :class:`wxnet.proto.value.Value` (``==`` and hash by ``_key()``, a ``repr``
that names the fields, pickling by the constructor) for interpreted modules: a class
written in Python cannot inherit from ``Value`` when that module is the compiled copy.
Both replace ``@dataclass(frozen=True, slots=True)``, whose creation at import runs
``exec`` for every generated method and needs ``inspect`` (together ~15-25 ms of every
command's start-up); attributes are ``Final``, so mypy refuses assignments.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Plain"]


class Plain:
    __slots__ = ()
    #: the constructor's parameter names, in ``_key()``'s order (for ``repr``); each
    #: type also names them ``__match_args__`` (positional class patterns, as with a
    #: dataclass)
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def _key(self) -> tuple[object, ...]:
        """The fields in constructor order (the types here spell theirs out, typed)."""
        return tuple(getattr(self, name) for name in self.FIELDS)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Plain)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[type[Plain], tuple[object, ...]]:
        return (type(self), self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(self.FIELDS, self._key(), strict=True))
        return f"{type(self).__name__}({fields})"
