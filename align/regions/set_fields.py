"""``FIELD=VALUE`` overrides of `RegionConfig` from the command line (``dvsa features --set``, ``dvsa bench
features --set``), each value converted to the field's type."""
from __future__ import annotations

from dataclasses import fields

from dvsa.align.regions.config import RegionConfig


def parse_set(items: list[str]) -> dict:
    """["max_boxes=10", "fp16=true"] -> {"max_boxes": 10, ...}; ValueError naming the item when FIELD is not a
    RegionConfig field."""
    types = {f.name: f.type for f in fields(RegionConfig)}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(types)}")
        kind = str(types[key])
        if kind == "bool":
            out[key] = value.lower() in ("1", "true", "yes", "on")
        elif kind == "int":
            out[key] = int(value)
        elif kind == "float":
            out[key] = float(value)
        else:
            out[key] = value
    return out
