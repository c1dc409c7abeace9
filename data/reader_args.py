"""Reader keywords from the command line: ``--dataset-arg KEY=VALUE`` pairs -> keyword arguments of a reader."""
from __future__ import annotations


def dataset_kwargs(pairs: list[str]) -> dict:
    """["images_dir=/x", "read_sizes=true"] -> {"images_dir": "/x", "read_sizes": True}."""
    out = {}
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--dataset-arg expects KEY=VALUE, got {item!r}")
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out
