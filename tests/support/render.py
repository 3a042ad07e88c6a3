"""Reading a rendered chart back: the series as drawn and its texts."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.text import Text


def plotted(fig: Figure) -> list[tuple[list[int], list[float]]]:
    """Each panel's series as drawn: week numbers and values (NaN: nothing drawn)."""
    out = []
    for ax in fig.axes:
        line = ax.get_lines()[0]  # the series; the highlight is drawn after it
        xs = [int(x) for x in np.asarray(line.get_xdata())]
        out.append((xs, [float(y) for y in np.asarray(line.get_ydata())]))
    return out


def texts(fig: Figure) -> set[str]:
    return {t.get_text() for t in fig.findobj(Text) if isinstance(t, Text)}
