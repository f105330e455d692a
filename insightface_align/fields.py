"""Strict typing of configuration sections (recipes, checkpoint configs) against a dataclass.

YAML hands over whatever the user wrote: `lr: '0.01'` is a string, `max_steps: 10.5` a
float, `lr_steps: 240` a number where a list is meant. `typed_fields` checks every value
against the field's annotation and names the field on failure, instead of letting a
TypeError surface later or an int() silently round.
"""
from __future__ import annotations

import dataclasses
import math
import re

from .errors import ConfigError

_SCALARS = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict}


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _parse_annotation(annotation) -> tuple:
    """(nullable, kind, element kinds or None) for the annotations this project uses."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = text.replace("typing.", "").strip()
    nullable = False
    match = re.fullmatch(r"Optional\[(.+)\]", text)
    if match:
        nullable, text = True, match.group(1).strip()
    parts = [p.strip() for p in text.split("|")]
    if "None" in parts:
        nullable = True
        parts.remove("None")
    text = "|".join(parts)
    match = re.fullmatch(r"(?:Tuple|tuple)\[(.+)\]", text)
    if match:
        elements = tuple(p.strip() for p in match.group(1).split(","))
        return nullable, "tuple", elements
    if text in ("list", "List"):
        text = "tuple"
    return nullable, text, None


def _scalar(kind: str, value, where: str):
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {_describe(value)}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {_describe(value)}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(where, f"expected a finite number, got {_describe(value)}")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(where, f"expected text, got {_describe(value)}")
        return value
    if kind == "dict":
        if not isinstance(value, dict):
            raise ConfigError(where, f"expected a mapping, got {_describe(value)}")
        return value
    return value  # an annotation this checker does not know: left to the dataclass


def check_value(annotation, value, where: str, default=None):
    """`value` checked (and ints widened to float, lists made tuples) for one field."""
    nullable, kind, elements = _parse_annotation(annotation)
    if value is None:
        if nullable:
            return None
        raise ConfigError(where, "must not be empty")
    if kind == "tuple":
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {_describe(value)}")
        if elements is None or (len(elements) == 2 and elements[1] == "..."):
            element = elements[0] if elements else _element_kind(default)
            return tuple(_scalar(element, v, f"{where}[{i}]") if element else v for i, v in enumerate(value))
        if len(value) != len(elements):
            raise ConfigError(where, f"expected {len(elements)} values, got {len(value)}")
        return tuple(_scalar(k, v, f"{where}[{i}]") for i, (k, v) in enumerate(zip(elements, value)))
    return _scalar(kind, value, where)


def _element_kind(default) -> str | None:
    """The element type of a bare `tuple` field, read off its default's first element."""
    if isinstance(default, (list, tuple)) and default:
        first = default[0]
        for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
            if isinstance(first, typ):
                return name
    return None


def typed_fields(cls, values, section: str) -> dict:
    """`values` for dataclass `cls`, every key known and every value of its field's type.

    ConfigError names `section.field` for an unknown key or a wrong type."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(section, f"expected a mapping of fields, got {_describe(values)}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        where = f"{section}.{key}" if section else str(key)
        if key not in known:
            raise ConfigError(where, f"unknown field; known fields: {', '.join(sorted(known))}")
        field = known[key]
        default = field.default if field.default is not dataclasses.MISSING else None
        out[key] = check_value(field.type, value, where, default)
    return out
