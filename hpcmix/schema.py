"""A small declarative checker for YAML configs (job files, site configs).

Every error names the file, the field, the value and what is allowed, and is
raised before any cluster starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from .errors import HpcmixError

REQUIRED = object()


class ConfigError(HpcmixError, ValueError):
    """A config file has a field with a wrong type, an out-of-range value, or an unknown key."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One allowed key of a config section."""

    check: Callable[[Any], bool]
    allowed: str  # what is allowed, in words (goes into error messages)
    default: Any = REQUIRED
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def is_int(v: Any, minimum: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def is_positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def is_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _passes(check: Callable[[Any], bool], value: Any) -> bool:
    """``check(value)``, where a value of a type the check never expected (``[] in {...}``) fails it."""
    try:
        return bool(check(value))
    except (TypeError, ValueError, AttributeError):
        return False


def check_section(data: Any, fields: Mapping[str, Field], *, source: str, prefix: str = "",
                  require: bool = True, error: type[ValueError] = ConfigError) -> dict[str, Any]:
    """Validate one mapping against ``fields``; return it with defaults filled in."""
    where = prefix.rstrip(".")
    if not isinstance(data, Mapping):
        raise error(f"{source}: {'section ' + repr(where) if where else 'the file'} must be a mapping "
                    f"of fields, got {type_name(data)}")
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise error(f"{source}: unknown field '{name}' (value {value!r}); "
                        f"allowed fields{' in ' + where if where else ''}: {', '.join(fields)}")
        if not _passes(fields[key].check, value):
            raise error(f"{source}: field '{name}' has value {value!r} ({type_name(value)}); "
                        f"allowed: {fields[key].allowed}")
    out = dict(data)
    for key, f in fields.items():
        if key not in data:
            if f.required and require:
                raise error(f"{source}: missing required field '{prefix}{key}' ({f.allowed})")
            if not f.required:
                out[key] = f.default
    return out
