"""Where a pipeline run folder keeps each model, so that every command's ``--checkpoint`` takes a checkpoint file
or a run folder (``dvsa pipeline --out RUN``).

    resolve_checkpoint("runs/demo", "caption")      # -> runs/demo/gen_full/model.pt
    resolve_checkpoint("runs/x/model.pt", "align")  # -> runs/x/model.pt (a file is taken as it is)

A folder that is neither a run folder holding the model nor a training output folder
(``OUT/model.pt`` of ``dvsa align train`` / ``dvsa generate train``), raises `CheckpointError` naming the path.
"""
from __future__ import annotations

import os
from pathlib import Path

from dvsa.data.errors import CheckpointError

# the file of each model in a run folder, by the role a command gives it
RUN_FILES = {
    "align": "align/model.pt",  # align eval / snippets / evaluate / show, retrieve
    "caption": "gen_full/model.pt",  # caption, generate eval (full frames)
    "dense": "gen_region/model.pt",  # dense
    "attention": "gen_attention/model.pt",  # caption --attention (PipelineConfig.attention)
    "box_score": "box_score.pt",  # the learned box score (--box-scorer)
}


def resolve_checkpoint(path: str | os.PathLike, role: str) -> Path:
    """The checkpoint file `path` names for `role` (a key of RUN_FILES): `path` itself when it is not a folder
    (the loader checks that it exists and is a checkpoint of the right kind); in a folder, the run folder's file
    for the role, else the folder's own ``model.pt`` (a training output folder)."""
    if role not in RUN_FILES:
        raise ValueError(f"unknown checkpoint role {role!r}; roles: {', '.join(RUN_FILES)}")
    p = Path(path)
    if not p.is_dir():
        return p  # a file (or a missing path, which the checkpoint loader reports as not found)
    for candidate in (p / RUN_FILES[role], p / "model.pt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{p}: a folder without {RUN_FILES[role]} (a pipeline run folder) or model.pt "
                          f"(a training output folder)")
