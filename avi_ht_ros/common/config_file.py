"""Reading YAML configuration files and ``NAME=VALUE`` command-line settings: the one place that
turns I/O and syntax errors into :class:`~avi_ht_ros.common.errors.ConfigError` naming the file
or option."""
from __future__ import annotations

import os
from typing import Any

import yaml

from avi_ht_ros.common.errors import ConfigError


def load_yaml_mapping(path: str | os.PathLike, where: str | None = None) -> dict[str, Any]:
    """The top-level mapping of the YAML file ``path`` (an empty file is ``{}``).

    Raises ``ConfigError(where, problem)`` (``where`` defaults to the path) when the file
    cannot be read, is not valid YAML, or its top level is not a mapping. Checking the
    content is the caller's job.
    """
    where = os.fspath(path) if where is None else where
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise ConfigError(where, f"cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(where, f"not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:  # a binary file: would escape as a traceback otherwise
        raise ConfigError(where, f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(where, f"top level must be a mapping, got {type(data).__name__}")
    return data


def split_assignment(assignment: str, where: str, expected: str = "NAME=VALUE") -> tuple[str, str]:
    """``"name=value"`` -> ``(name, value text)`` split at the first ``=``, the name stripped. A
    missing ``=`` or name raises ``ConfigError(where, ...)`` quoting ``expected`` and the input."""
    name, equals, text = assignment.partition("=")
    if not equals or not name.strip():
        raise ConfigError(where, f"expected {expected}, got {assignment!r}")
    return name.strip(), text


def yaml_assignment(assignment: str, where: str, expected: str = "NAME=VALUE") -> tuple[str, Any]:
    """``"name=value"`` -> ``(name, value read as YAML)``, an empty value being ``""`` (e.g.
    ``"noise_scale=0.5"`` -> ``("noise_scale", 0.5)``). A missing ``=`` or name, or a value that is
    not YAML, raises ``ConfigError(where, ...)`` quoting ``expected`` and the input."""
    name, text = split_assignment(assignment, where, expected)
    try:
        return name, (yaml.safe_load(text) if text.strip() else "")
    except yaml.YAMLError as exc:
        raise ConfigError(where, f"{assignment!r}: the value is not YAML ({exc})") from None
