"""Parameters described once: a dataclass field carries its description and range.

Core configs (e.g. :class:`avi_ht_ros.tracker.sync.SyncConfig`) and node
parameter sets declare their fields with :func:`param`. The nodes turn each
into a ROS parameter with a descriptor (``avi_ht_ros.nodes.base``), the CLI
prints them as the README tables (``avi-ht params``), and :meth:`ParamSpec.coerce`
checks type, range and choices with an error naming the parameter.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from avi_ht_ros.common.errors import ConfigError

_META = "avi_ht_param"


def param(default: Any, description: str, *, range: tuple[float, float] | None = None,
          choices: tuple | None = None, read_only: bool = True, unit: str = "") -> Any:
    """A dataclass field that is also a documented, range-checked parameter."""
    meta = {"description": description, "range": range, "choices": choices, "read_only": read_only,
            "unit": unit}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata={_META: meta})
    return dataclasses.field(default=default, metadata={_META: meta})


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    element_type: type | None      # for tuple[...] parameters
    default: Any
    description: str
    range: tuple[float, float] | None
    choices: tuple | None
    read_only: bool
    unit: str

    @property
    def ros_default(self) -> Any:
        return list(self.default) if self.element_type is not None else self.default

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` as this parameter's type, or a ConfigError naming ``name``."""
        where = f"parameter '{name}'"
        if self.element_type is not None:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(where, f"expected a list, got {value!r}")
            return tuple(self._coerce_scalar(where, self.element_type, v) for v in value)
        return self._coerce_scalar(where, self.type, value)

    def _coerce_scalar(self, where: str, kind: type, value: Any) -> Any:
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is bool and not isinstance(value, bool) or kind is not bool and isinstance(value, bool) \
                or not isinstance(value, kind):
            raise ConfigError(where, f"expected {kind.__name__}, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise ConfigError(where, f"must be finite, got {value!r}")
        if self.range is not None and kind in (int, float):
            low, high = self.range
            if not low <= value <= high:
                raise ConfigError(where, f"{value!r} outside [{low}, {high}]{(' ' + self.unit) if self.unit else ''}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(where, f"{value!r} is not one of {list(self.choices)}")
        return value


def param_specs(cls: type) -> list[ParamSpec]:
    """The :func:`param` fields of dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    specs = []
    for field in dataclasses.fields(cls):
        meta = field.metadata.get(_META)
        if meta is None:
            continue
        hint = hints[field.name]
        element = None
        if typing.get_origin(hint) is tuple:
            element = typing.get_args(hint)[0]
            kind = tuple
        else:
            kind = hint
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        specs.append(ParamSpec(field.name, kind, element, default, meta["description"], meta["range"],
                               meta["choices"], meta["read_only"], meta["unit"]))
    return specs


def validate_params(instance: Any) -> None:
    """Check every :func:`param` field of a dataclass instance (call from ``__post_init__``)."""
    for spec in param_specs(type(instance)):
        spec.coerce(f"{type(instance).__name__}.{spec.name}", getattr(instance, spec.name))


def params_markdown(cls: type, prefix: str = "") -> str:
    """A README table of ``cls``'s parameters."""
    rows = ["| parameter | type | default | range / choices | description |", "|---|---|---|---|---|"]
    for spec in param_specs(cls):
        kind = f"{spec.element_type.__name__}[]" if spec.element_type else spec.type.__name__
        limits = (f"[{spec.range[0]}, {spec.range[1]}]" if spec.range else
                  ", ".join(map(str, spec.choices)) if spec.choices else "")
        unit = f" ({spec.unit})" if spec.unit else ""
        rows.append(f"| `{prefix}{spec.name}` | {kind} | `{spec.ros_default!r}` | {limits} | "
                    f"{spec.description}{unit} |")
    return "\n".join(rows)
