"""Exhaustive translations of a protobuf enum: its values by the names a service uses for them (a
domain `StrEnum`, the REST API's strings), which are the proto names without their prefix.

`ORDER_STATUS_PENDING` (1) is `"PENDING"`, and back. The zero value (`*_UNSPECIFIED`) is "not
set": it has no name. A number the enum does not hold, or a name it does not have, raises
`UnknownEnumValue`: never a default. Derived from the enum's descriptor, a translation covers
every value the protos hold; a service's test iterates the proto enum's values to prove its own
names cover them all (`names`), so a value added to the protos without a translation fails a test.

```python
STATUS = ProtoEnumNames(order_pb2.OrderStatus, prefix="ORDER_STATUS_")
STATUS.number("PENDING")                 # 1
STATUS.name(order.status)                # "PENDING"; 0 or an unknown number: UnknownEnumValue
REASON.optional_name(order.cancel_reason)  # None for CANCEL_REASON_UNSPECIFIED
```
"""

from __future__ import annotations

from typing import Any


class UnknownEnumValue(ValueError):
    """A number or name that the enum does not hold (or its zero value, where one is required)."""


class ProtoEnumNames:
    """The values of one protobuf enum by their names without `prefix`."""

    def __init__(self, proto_enum: Any, *, prefix: str) -> None:
        """`proto_enum`: the generated enum wrapper (e.g. `order_pb2.OrderStatus`)."""
        descriptor = proto_enum.DESCRIPTOR
        self.full_name: str = descriptor.full_name
        numbers: dict[str, int] = {}
        for value in descriptor.values:
            if value.number == 0:
                continue
            if not value.name.startswith(prefix):
                raise ValueError(f"{self.full_name}.{value.name} does not start with {prefix!r}")
            numbers[value.name.removeprefix(prefix)] = value.number
        self._numbers = numbers
        self._names = {number: name for name, number in numbers.items()}

    @property
    def names(self) -> tuple[str, ...]:
        """Every name, in the order of the values' numbers."""
        return tuple(sorted(self._numbers, key=self._numbers.__getitem__))

    def name(self, number: int) -> str:
        """The name of a set value; `UnknownEnumValue` for the zero value or an unknown number."""
        name = self._names.get(number)
        if name is None:
            what = "is not set" if number == 0 else f"has no value {number}"
            raise UnknownEnumValue(f"{self.full_name} {what}")
        return name

    def optional_name(self, number: int) -> str | None:
        """The name, or None for the zero value ("not set"); an unknown number still raises."""
        return None if number == 0 else self.name(number)

    def number(self, name: str) -> int:
        """The number of `name`; `UnknownEnumValue` when the enum has no such value."""
        number = self._numbers.get(name)
        if number is None:
            raise UnknownEnumValue(f"{self.full_name} has no value named {name!r}")
        return number
