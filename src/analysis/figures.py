"""Matplotlib plumbing shared by the analysis figures: a display-free pyplot and one way to save a figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, title: str | None = None) -> Path:
    """Add the figure's title, lay it out, write it as PNG and free it."""
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
