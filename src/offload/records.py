"""Records that cost nothing to define: `@record` (frozen), `@mutable_record`, and their
`field`, `fields`, `replace` and `asdict`.

Why not `dataclasses`: `@dataclass` writes each class's `__init__`, `__eq__`, `__repr__`
and (frozen) `__setattr__` as source text and compiles it while the module is imported,
about 0.3 ms a class here, and importing `dataclasses` pulls in `inspect`, `ast`, `dis`
and `tokenize`, about 7 ms more. Every `offload` command pays that before doing anything:
a third of what `offload list` may cost in all (issue 13). A record is declared like a
dataclass (annotated fields, defaults, `field(default_factory=...)`) and type-checks like
one (`dataclass_transform`), but shares one `__init__` that needs no compiling.

Semantics, as a frozen dataclass's: keyword or positional arguments in field order,
defaults and factories, value equality between records of the same class, a hash of the
field values (frozen only), a `repr` of every field, and no attribute assignment (frozen
only), and a `__post_init__` called after the fields are set, if the class has one. Not
supported: `init=False`, `ClassVar` fields, `__slots__`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs ~3 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")
else:

    def dataclass_transform(**_options: object) -> object:
        return lambda decorator: decorator


__all__ = [
    "Field",
    "FrozenRecordError",
    "asdict",
    "field",
    "fields",
    "is_record",
    "mutable_record",
    "record",
    "replace",
]

_FIELDS = "__record_fields__"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenRecordError(AttributeError):
    """An attribute of a frozen record was assigned or deleted."""


class Field:
    """One field of a record: its name, its annotation (as written) and its default."""

    __slots__ = ("default", "default_factory", "name", "type")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING) -> None:
        self.name = ""
        self.type = ""
        self.default = default
        self.default_factory = default_factory

    def value(self) -> Any:
        """The default value of this field (a fresh one from its factory)."""
        if self.default_factory is not MISSING:
            return self.default_factory()
        return self.default

    @property
    def required(self) -> bool:
        """True when the field has no default."""
        return self.default is MISSING and self.default_factory is MISSING

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, type={self.type!r})"


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] = MISSING) -> Any:
    """A field's default given as a value or as a factory called once per record."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("give a default or a default_factory, not both")
    return Field(default, default_factory)


def _collect(cls: type) -> dict[str, Field]:
    """The fields of `cls`: those of record bases first, then its own annotations in order."""
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        found.update(getattr(base, _FIELDS, {}))
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        declared = cls.__dict__.get(name, MISSING)
        spec = declared if isinstance(declared, Field) else Field(default=declared)
        spec.name, spec.type = name, str(annotation)
        if isinstance(declared, Field):
            if spec.default is MISSING:
                delattr(cls, name)  # the instance attribute is the only one
            else:
                setattr(cls, name, spec.default)
        found[name] = spec
    return found


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    specs: dict[str, Field] = getattr(type(self), _FIELDS)
    if not args and kwargs.keys() == specs.keys():  # every field by name: `from_row`
        self.__dict__.update(kwargs)
    else:
        self.__dict__.update(_values_for(type(self), specs, args, kwargs))
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _values_for(
    cls: type, specs: dict[str, Field], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Each field's value from positional and keyword arguments and the defaults."""
    if len(args) > len(specs):
        raise TypeError(f"{cls.__name__}() takes {len(specs)} arguments, got {len(args)}")
    values = dict(zip(specs, args, strict=False))
    for name in kwargs:
        if name in values:
            raise TypeError(f"{cls.__name__}() got {name!r} twice")
        if name not in specs:
            raise TypeError(f"{cls.__name__}() has no field {name!r}")
    values.update(kwargs)
    for name, spec in specs.items():
        if name not in values:
            if spec.required:
                raise TypeError(f"{cls.__name__}() needs the field {name!r}")
            values[name] = spec.value()
    return values


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={self.__dict__[name]!r}" for name in getattr(type(self), _FIELDS))
    return f"{type(self).__qualname__}({shown})"


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(self.__dict__[name] for name in getattr(type(self), _FIELDS))


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r}: {type(self).__name__} is frozen")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r}: {type(self).__name__} is frozen")


def _make(cls: type[T], frozen: bool) -> type[T]:
    methods: dict[str, Any] = {"__init__": _init, "__repr__": _repr, "__eq__": _eq}
    if frozen:
        methods.update(__hash__=_hash, __setattr__=_frozen_setattr, __delattr__=_frozen_delattr)
    else:
        methods["__hash__"] = None  # equal by value and mutable: not hashable
    setattr(cls, _FIELDS, _collect(cls))
    for name, method in methods.items():
        setattr(cls, name, method)
    return cls


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Makes `cls` a frozen record (see the module docstring)."""
    return _make(cls, frozen=True)


@dataclass_transform(field_specifiers=(field,))
def mutable_record(cls: type[T]) -> type[T]:
    """Makes `cls` a record whose fields may be assigned (not hashable)."""
    return _make(cls, frozen=False)


def is_record(obj: object) -> bool:
    """True for a record class or instance."""
    return hasattr(obj, _FIELDS)


def fields(class_or_record: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in declaration order.

    Raises:
        TypeError: `class_or_record` is not a record.
    """
    try:
        return tuple(getattr(class_or_record, _FIELDS).values())
    except AttributeError:
        raise TypeError(f"{class_or_record!r} is not a record") from None


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of the record `obj` with `changes` (built through `__init__`).

    Raises:
        TypeError: `obj` is not a record, or a change names no field.
    """
    current = {f.name: obj.__dict__[f.name] for f in fields(obj)}
    current.update(changes)
    return type(obj)(**current)


def asdict(obj: Any) -> Any:
    """A record (recursively, through lists, tuples and dicts) as plain dicts."""
    if is_record(obj) and not isinstance(obj, type):
        return {f.name: asdict(obj.__dict__[f.name]) for f in fields(obj)}
    if isinstance(obj, list | tuple):
        return type(obj)(asdict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: asdict(v) for k, v in obj.items()}
    return obj
