"""Config dataclass <-> command line, shared by the training scripts.

`add_config_flags` gives every dataclass field a flag whose default is None, so the dataclass stays the only
home of defaults; `config_from_args` resolves them: dataclass defaults, then ``--config`` JSON, then flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping, Sequence


def add_config_flags(p: argparse.ArgumentParser, cls, choices: Mapping[str, Sequence] | None = None) -> None:
    """One flag per field of dataclass `cls` (``--embed-dim``; bools get ``--x/--no-x``), default None (= the
    dataclass's default). `choices` maps a field name to its allowed values."""
    choices = choices or {}
    where = cls.__module__.replace(".", "/") + ".py"
    g = p.add_argument_group(f"{cls.__name__} fields (defaults in {where})")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"default {f.default}")
        else:
            g.add_argument(flag, dest=f.name, type=type(f.default), default=None, choices=choices.get(f.name),
                           help=f"default {f.default}")


def config_from_args(args: argparse.Namespace, cls):
    """`cls.from_dict` of the dataclass defaults, then the ``--config`` JSON file (if any), then the flags set."""
    values = {}
    if getattr(args, "config", None):
        with open(args.config) as fh:
            values.update(json.load(fh))
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None})
    return cls.from_dict(values)
