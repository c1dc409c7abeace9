"""Progress bars: the one way a long dvsa step shows its rate and ETA (tqdm on stderr).

    for batch in progress(batches, desc="epoch 3", unit="batch"): ...
    bar = progress(total=n, desc="snippets", unit="sent"); bar.update(k); bar.close()

A bar is shown only when stderr is a terminal and the process is not quiet: `set_quiet(True)` (the commands'
``--quiet``) or the environment variable ``DVSA_QUIET=1`` silences every bar; a caller's own
``enabled=False`` (a non-main DDP rank, a pipeline stage that logs instead) silences one.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm import tqdm

_QUIET = [os.environ.get("DVSA_QUIET", "") not in ("", "0")]


def set_quiet(quiet: bool = True) -> None:
    """Silence (or allow again) every progress bar of this process."""
    _QUIET[0] = bool(quiet)


def is_quiet() -> bool:
    return _QUIET[0]


def shown(enabled: bool = True) -> bool:
    """Whether a bar asked for with `enabled` is drawn: not quiet, and stderr is a terminal."""
    return bool(enabled) and not _QUIET[0] and sys.stderr.isatty()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = False, **kw) -> tqdm:
    """A tqdm bar on stderr with rate and ETA, disabled unless `shown(enabled)`."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not shown(enabled), leave=leave,
                dynamic_ncols=True, file=sys.stderr, **kw)
