"""``--set stage.key=value``: the one way a command overrides a stage's settings, checked before any work.

    items = ["align.epochs=3", "region.score_pooling=warp", "beams=[1,3]"]
    groups = parse_set(items, {"align": AlignConfig, "region": RegionConfig, "": PipelineConfig})
    # {"align": {"epochs": 3}, "region": {"score_pooling": "warp"}, "": {"beams": (1, 3)}}

A value is read as JSON when it parses (``3``, ``0.5``, ``true``, ``[1,7]``, ``{"a": 1}``, ``null``), else as the
text itself, then checked against the type of the dataclass field it names (`coerce`): int (a float or a bool is
refused), float (an int is taken as it is), bool (``true``/``false``, also ``yes``/``no``/``on``/``off``/``1``/
``0``), str (the text as typed, never JSON: ``lr_schedule=none`` is the string "none"), ``X | None`` (``null`` or
``none`` is None), tuple (a JSON list or ``a,b,c``; elements checked against ``tuple[int, ...]``), list, dict
(a JSON object). A stage or key that names no field, or a value of another type, raises `ConfigError` (a usage
error: exit 2) naming the key, the value and what was expected.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvsa.data.errors import ConfigError, DataError

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_NONE = ("none", "null")


def parse_value(text: str) -> Any:
    """JSON when it parses, else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_item(item: str) -> tuple[str, str]:
    """``"align.epochs=3"`` -> ("align.epochs", "3"); ConfigError when there is no ``=`` or no key."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set: expected stage.key=value, got {item!r}")
    return key.strip(), text


def field_types(cls) -> dict[str, Any]:
    """{field name: resolved type} of dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(tp, value, text: str):
    """`value` (JSON-parsed `text`) as type `tp`; raises TypeError/ValueError when it is not one."""
    if tp is Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in _NONE)):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, text)
            except (TypeError, ValueError):
                continue
        raise TypeError
    if tp is typing.Literal or origin is typing.Literal:
        if value in args or text in args:
            return value if value in args else text
        raise ValueError
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is str:
        if value is None:
            raise TypeError  # null for a field that cannot be None
        return text  # the text as typed (a str field never takes JSON)
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    if tp in (tuple, list) or origin in (tuple, list):
        if isinstance(value, str):
            items = [parse_value(t.strip()) for t in text.split(",") if t.strip()] if text.strip() else []
        elif isinstance(value, (list, tuple)):
            items = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            items = [value]
        else:
            raise TypeError
        elem = args[0] if args and (len(args) == 1 or args[-1] is Ellipsis) else None
        if elem is not None:
            items = [_coerce(elem, v, v if isinstance(v, str) else json.dumps(v)) for v in items]
        elif tp is tuple or origin is tuple:
            items = [str(v) if isinstance(v, str) else v for v in items]
        return tuple(items) if (tp is tuple or origin is tuple) else list(items)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise TypeError
    return value


def coerce(cls, key: str, text: Any, where: str = "") -> Any:
    """The value of ``key=text`` for field `key` of dataclass `cls`; ConfigError naming the key, the value and
    the expected type when it is not one (`where` prefixes the key in the message, e.g. "align.")."""
    types_ = field_types(cls)
    if key not in types_:
        raise ConfigError(f"--set {where}{key}: {cls.__name__} has no field {key!r}; fields: {', '.join(types_)}")
    tp = types_[key]
    if isinstance(text, str):  # from the command line
        value, raw, plain = parse_value(text), text, text
    else:  # already a value (a config's dict of overrides)
        value, raw = text, json.dumps(text, default=str)
        plain = value if isinstance(value, str) else raw
    try:
        return _coerce(tp, value, plain)
    except (TypeError, ValueError):
        raise ConfigError(f"--set {where}{key}={raw}: expected {_type_name(tp)} for {cls.__name__}.{key}, "
                          f"got {raw!r}") from None


def check_fields(cls, overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """`overrides` (already-parsed values, e.g. a config's dict of overrides) checked against dataclass `cls`:
    the same checks and conversions as `coerce`; returns the converted dict."""
    return {k: coerce(cls, k, v, where) for k, v in overrides.items()}


def parse_set(items: list[str] | tuple[str, ...], stages: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """``--set`` items -> {stage: {field: value}} checked against `stages` ({stage name: its config dataclass};
    the stage "" takes keys without a prefix, e.g. the pipeline's own fields). Every item is checked before the
    result is returned; the first bad one raises ConfigError."""
    out: dict[str, dict[str, Any]] = {name: {} for name in stages}
    for item in items:
        key, text = split_item(item)
        stage, dot, sub = key.partition(".") if "." in key else ("", "", key)
        if stage not in stages:
            named = [s for s in stages if s]
            if not dot and "" not in stages:
                raise ConfigError(f"--set {item}: expected stage.key=value with stage one of {', '.join(named)}")
            raise ConfigError(f"--set {item}: unknown stage {stage!r}; stages: {', '.join(named)}"
                              + (" (or a key without a stage)" if "" in stages else ""))
        out[stage][sub] = coerce(stages[stage], sub, text, f"{stage}." if stage else "")
    return out


def set_fields(cfg, values: Mapping[str, Any]):
    """dataclasses.replace(cfg, **values) (values as `parse_set` returns them)."""
    return dataclasses.replace(cfg, **values) if values else cfg


def read_config_file(path: str | os.PathLike, cls) -> dict[str, Any]:
    """The JSON object of dataclass `cls` fields in file `path` (``--config FILE.json``), checked like ``--set``
    (ConfigError naming the key); DataError when the file is not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(str(path), f"expected a JSON object of {cls.__name__} fields")
    return check_fields(cls, data, "")


def build_config(cls, *layers: Mapping[str, Any], choices: Mapping[str, tuple] | None = None):
    """cls(**defaults overridden by each of `layers` in turn), every key and value checked (`check_fields`, and
    `choices`: {field: allowed values}); a value the dataclass itself refuses (its __post_init__) is a
    ConfigError too."""
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(check_fields(cls, layer))
    for key, allowed in (choices or {}).items():
        if key in values and values[key] not in allowed:
            raise ConfigError(f"--set {key}={values[key]}: {cls.__name__}.{key} must be one of "
                              f"{', '.join(map(str, allowed))}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--set: {e}") from None
