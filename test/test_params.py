"""Parameter specs: types, ranges and choices checked with errors naming the parameter."""
from __future__ import annotations

import dataclasses

import pytest

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.params import param, param_specs, params_markdown, validate_params


@dataclasses.dataclass(frozen=True)
class Example:
    rate_hz: float = param(60.0, "frame rate", range=(1.0, 240.0), unit="Hz")
    side: str = param("right", "hand", choices=("left", "right"))
    count: int = param(3, "how many", range=(0, 10))
    enabled: bool = param(True, "switch")
    gains: tuple[float, ...] = param((1.0, 2.0), "per-axis gains")

    def __post_init__(self):
        validate_params(self)


def test_specs_and_markdown():
    specs = {s.name: s for s in param_specs(Example)}
    assert specs["rate_hz"].type is float and specs["gains"].element_type is float
    assert specs["gains"].ros_default == [1.0, 2.0]
    table = params_markdown(Example)
    assert "`rate_hz`" in table and "[1.0, 240.0]" in table and "left, right" in table


@pytest.mark.parametrize("field,value,message", [
    ("rate_hz", 0.5, "outside"), ("side", "middle", "not one of"), ("count", 2.5, "expected int"),
    ("enabled", 1, "expected bool"), ("count", True, "expected int"), ("rate_hz", float("nan"), "finite"),
    ("gains", 3.0, "expected a list"),
])
def test_bad_values_name_the_parameter(field, value, message):
    with pytest.raises(ConfigError, match=f"Example.{field}.*{message}"):
        Example(**{field: value})


def test_int_accepted_for_float():
    spec = {s.name: s for s in param_specs(Example)}["rate_hz"]
    assert spec.coerce("rate_hz", 30) == 30.0 and isinstance(spec.coerce("rate_hz", 30), float)
