"""`offload.records`: what the queue's records, the settings and the policies rely on."""

from __future__ import annotations

import copy
import pickle

import pytest

from offload.records import (
    FrozenRecordError,
    asdict,
    field,
    fields,
    is_record,
    mutable_record,
    record,
    replace,
)


@record
class Point:
    x: int
    y: int = 0
    tags: list[str] = field(default_factory=list)


@record
class Point3(Point):
    z: int = 0


@mutable_record
class Counter:
    name: str
    count: int = 0


@record
class Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


def test_positional_keyword_and_defaults() -> None:
    assert Point(1) == Point(x=1, y=0, tags=[])
    assert Point(1, 2).y == 2
    assert Point(1).tags is not Point(1).tags  # a fresh value from the factory each time


@pytest.mark.parametrize(
    "make",
    [lambda: Point(), lambda: Point(1, x=2), lambda: Point(w=1), lambda: Point(1, 2, [], 4)],
)
def test_wrong_arguments_are_type_errors(make: object) -> None:
    with pytest.raises(TypeError):
        make()  # type: ignore[operator]


def test_frozen_records_refuse_assignment_and_hash_by_value() -> None:
    point = Point(1, 2, ["a"])
    with pytest.raises(FrozenRecordError):
        point.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del point.y  # type: ignore[misc]
    assert hash(Point(1, 2, None)) == hash(Point(1, 2, None))  # type: ignore[arg-type]


def test_equality_needs_the_same_class() -> None:
    assert Point(1) != Point3(1)
    assert Point(1) != (1, 0, [])


def test_inherited_fields_come_first() -> None:
    assert [f.name for f in fields(Point3)] == ["x", "y", "tags", "z"]
    assert Point3(1, 2, [], 3).z == 3


def test_mutable_records_assign_and_are_unhashable() -> None:
    counter = Counter("c")
    counter.count += 1
    assert counter == Counter("c", 1)
    with pytest.raises(TypeError):
        hash(counter)


def test_post_init_validates() -> None:
    with pytest.raises(ValueError):
        Checked(-1)
    with pytest.raises(ValueError):
        replace(Checked(1), value=-1)


def test_replace_asdict_repr_copy_and_pickle() -> None:
    point = Point3(1, tags=["a"])
    moved = replace(point, y=5)
    assert (moved.x, moved.y, moved.z, point.y) == (1, 5, 0, 0)
    with pytest.raises(TypeError):
        replace(point, w=1)
    assert asdict([point]) == [{"x": 1, "y": 0, "tags": ["a"], "z": 0}]
    assert repr(point) == "Point3(x=1, y=0, tags=['a'], z=0)"
    assert copy.deepcopy(point) == point
    assert pickle.loads(pickle.dumps(point)) == point
    assert is_record(point) and is_record(Point3) and not is_record(object())


def test_a_record_is_no_dataclass() -> None:
    with pytest.raises(TypeError):
        fields(object())
