"""Training curves: a run's history.json drawn as a PNG (``curves.png`` beside it, `dvsa.data.training`).

    plot_history(history, "runs/align/curves.png", title="alignment")

`history` is the list of per-epoch rows the trainers write: every row has ``epoch`` and ``loss``; the aligner's
rows may have ``val`` = {"annotation": {"r1", "r5", "r10", ...}, "search": {...}, "rsum"} and the generators'
``val_cider``. The left panel is the training loss per epoch; the right one (when some row has validation
numbers) the aligner's validation R@1 / R@5 / R@10 of annotation (solid) and search (dashed), or only its
R@K sum when the recalls are missing, or the generators' validation CIDEr. An empty history draws a figure that
says so. Drawn with matplotlib's Agg canvas (no pyplot: the process's backend is left alone) into memory and
written atomically (`dvsa.data.io.atomic_write_bytes`), so a reader never sees half a picture.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

from dvsa.data.io import atomic_write_bytes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_history", "render_history"]

RECALLS = (1, 5, 10)


def _num(v) -> float:
    """A finite float, or nan (missing, None, not a number)."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _epochs(history: list[dict]) -> list[int]:
    return [int(r.get("epoch", i + 1)) for i, r in enumerate(history)]


def _validation(history: list[dict]) -> tuple[str, dict[str, list[float]]]:
    """(y label, {line label: values per epoch}) of the validation numbers in `history` ({} if none)."""
    vals = [r.get("val") if isinstance(r.get("val"), dict) else {} for r in history]
    lines: dict[str, list[float]] = {}
    for d in ("annotation", "search"):
        for k in RECALLS:
            ys = [_num((v.get(d) or {}).get(f"r{k}")) if isinstance(v.get(d), dict) else math.nan for v in vals]
            if any(not math.isnan(y) for y in ys):
                lines[f"{d} R@{k}"] = ys
    if lines:
        return "validation recall (%)", lines
    rsum = [_num(v.get("rsum")) for v in vals]
    if any(not math.isnan(y) for y in rsum):
        return "validation R@K sum", {"R@K sum": rsum}
    cider = [_num(r.get("val_cider")) for r in history]
    if any(not math.isnan(y) for y in cider):
        return "validation CIDEr", {"CIDEr": cider}
    return "", {}


def render_history(history: list[dict], title: str = "") -> bytes:
    """The PNG bytes of `history`'s curves (module doc)."""
    history = [r for r in (history or []) if isinstance(r, dict)]
    ylabel, lines = _validation(history)
    fig = Figure(figsize=(10 if lines else 5.5, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    ax = fig.add_subplot(1, 2 if lines else 1, 1)
    ax.set_title("training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if not history:
        ax.text(0.5, 0.5, "no epochs yet", ha="center", va="center", transform=ax.transAxes)
    else:
        epochs = _epochs(history)
        ax.plot(epochs, [_num(r.get("loss")) for r in history], marker="o", ms=3, color="tab:blue")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if lines:
        epochs = _epochs(history)
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.set_title(ylabel)
        ax2.set_xlabel("epoch")
        ax2.grid(True, alpha=0.3)
        colors = {1: "tab:blue", 5: "tab:orange", 10: "tab:green"}
        for name, ys in lines.items():
            k = next((k for k in RECALLS if name.endswith(f"R@{k}")), None)
            style = "--" if name.startswith("search") else "-"
            ax2.plot(epochs, ys, style, marker="o", ms=3, label=name, color=colors.get(k, "tab:red"))
        ax2.xaxis.get_major_locator().set_params(integer=True)
        if len(lines) > 1:
            ax2.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_history(history: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Draw `history` (module doc) into the PNG file `path`, atomically; returns `path`."""
    return atomic_write_bytes(Path(path), render_history(history, title))
