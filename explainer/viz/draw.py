"""Artists that are built once and then updated in place.

Every figure of the course draws in continuous image coordinates: pixel (i, j) is the unit square
[j, j+1) x [i, i+1), its centre is (j + 0.5, i + 0.5), and y grows downwards as in an image. A box
in Detectron's inclusive pixel indices [x1, x2] is drawn as the pixels it covers, [x1, x2 + 1).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.patches import Rectangle

from explainer.viz.style import STYLE, convention_style


def box_xy(box: Sequence[float], inclusive: bool = False):
    """(x, y, width, height) of the rectangle drawn for ``box``; an inclusive box covers x2 + 1."""
    x1, y1, x2, y2 = (float(v) for v in box)
    extra = 1.0 if inclusive else 0.0
    return x1, y1, x2 - x1 + extra, y2 - y1 + extra


def set_box(rect: Rectangle, box: Sequence[float], inclusive: bool = False) -> None:
    """Move an existing Rectangle to ``box`` (no new artist)."""
    x, y, w, h = box_xy(box, inclusive)
    rect.set_xy((x, y))
    rect.set_width(w)
    rect.set_height(h)


class PixelGrid:
    """A pixel grid on an axes: cell borders, optional centre dots and index labels, resizable in place.

    The grid covers ``width`` x ``height`` pixels; call :meth:`set_size` to change it (artists are
    reused). Axis labels say the unit (image pixels, or feature cells when ``unit="feature cells"``).
    """

    def __init__(self, ax, width: int, height: int, *, centres: bool = True, labels: bool = True,
                 unit: str = "image pixels", margin: float = 0.5):
        self.ax = ax
        self.unit = unit
        self.margin = margin
        self.lines = LineCollection([], colors=STYLE["grid"], linewidths=0.8, zorder=1)
        ax.add_collection(self.lines)
        (self.centres,) = ax.plot([], [], linestyle="none", marker=".", markersize=4,
                                  color=STYLE["centre"], zorder=2, label="pixel centres (i + 0.5)")
        self.centres.set_visible(centres)
        if not centres:
            self.centres.set_label("_nolegend_")
        self.show_labels = labels
        self._tick_cache: Optional[Tuple[int, int]] = None
        ax.set_aspect("equal")
        ax.set_xlabel(f"x ({unit}; continuous, pixel i covers [i, i+1))")
        ax.set_ylabel(f"y ({unit})")
        self.set_size(width, height)

    def set_size(self, width: int, height: int) -> None:
        width, height = int(width), int(height)
        self.width, self.height = width, height
        segs = [((x, 0), (x, height)) for x in range(width + 1)]
        segs += [((0, y), (width, y)) for y in range(height + 1)]
        self.lines.set_segments(segs)
        # centres are drawn only while they stay legible
        if width * height <= 4096:
            xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
            self.centres.set_data(xs.ravel(), ys.ravel())
        else:
            self.centres.set_data([], [])
        m = self.margin
        self.ax.set_xlim(-m, width + m)
        self.ax.set_ylim(height + m, -m)
        key = (width, height)
        if self.show_labels and key != self._tick_cache:
            self._tick_cache = key
            step = max(1, int(np.ceil(max(width, height) / 16)))
            self.ax.set_xticks(np.arange(0, width + 1, step))
            self.ax.set_yticks(np.arange(0, height + 1, step))

    def set_view(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """Zoom to [x0, x1] x [y0, y1] (continuous coordinates)."""
        self.ax.set_xlim(x0, x1)
        self.ax.set_ylim(y1, y0)


class BoxArtist:
    """A box drawn in a convention's style, with an optional corner label; moved with :meth:`set`."""

    def __init__(self, ax, convention: str, *, inclusive: Optional[bool] = None, label: Optional[str] = None,
                 fill_alpha: float = 0.12, linewidth: float = 2.0, zorder: int = 3):
        s = convention_style(convention)
        self.inclusive = (s["short"] == "Detectron") if inclusive is None else inclusive
        self.rect = Rectangle((0, 0), 0, 0, facecolor=s["color"], alpha=None, edgecolor=s["color"],
                              linestyle=s["linestyle"], linewidth=linewidth, fill=False, zorder=zorder,
                              label=label if label is not None else s["label"])
        self.fill = Rectangle((0, 0), 0, 0, facecolor=s["color"], edgecolor="none", alpha=fill_alpha, zorder=zorder - 1)
        ax.add_patch(self.fill)
        ax.add_patch(self.rect)

    def set(self, box: Sequence[float]) -> None:
        set_box(self.rect, box, self.inclusive)
        set_box(self.fill, box, self.inclusive)

    def set_visible(self, visible: bool) -> None:
        self.rect.set_visible(visible)
        self.fill.set_visible(visible)


def label_cells(ax, values, fmt: str = "{:g}", **text_kw) -> list:
    """Write each value of an H x W array at its cell's centre (j + 0.5, i + 0.5); returns the Text artists."""
    kw = dict(ha="center", va="center", fontsize=7.5, color=STYLE["neutral"])
    kw.update(text_kw)
    arr = np.asarray(values)
    return [ax.text(j + 0.5, i + 0.5, fmt.format(arr[i, j]), **kw) for i in range(arr.shape[0]) for j in range(arr.shape[1])]


def box_segments(boxes) -> list:
    """Closed outlines of N x 4 (x1, y1, x2, y2) boxes, for one ``LineCollection.set_segments`` call."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return [[(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)] for x1, y1, x2, y2 in b]


@lru_cache(maxsize=4)
def sample_photo(width: Optional[int] = None) -> np.ndarray:
    """matplotlib's bundled photo (``grace_hopper.jpg``: works offline), decoded by Pillow, as uint8 H x W x 3 RGB;
    with ``width``, resized once (bilinear) to that width so that its pixels show. Read-only: copy before editing."""
    from matplotlib import cbook
    from PIL import Image

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    with Image.open(path) as f:
        im = f.convert("RGB")
    if width is not None:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.BILINEAR)
    out = np.asarray(im)
    out.setflags(write=False)
    return out


class DescribedFigure:
    """A static figure displayed with its text alternative.

    In a notebook it shows as an HTML image with the description as its ``alt``; the PNG form's output metadata carries
    the same ``alt`` (for a front end that shows the PNG), and the plain-text form is the description itself. Displaying it closes the figure in
    pyplot, so that a backend that shows every open figure at the end of a cell does not show it a second time.
    """

    def __init__(self, fig, description: str):
        if not description or not description.strip():
            raise ValueError("a figure needs a description: what it shows, for readers who cannot see it")
        self.fig = fig
        self.description = " ".join(description.split())

    def png(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.fig.dpi)
        return buf.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None):
        import base64
        import html

        import matplotlib.pyplot as plt

        png = base64.b64encode(self.png()).decode("ascii")
        # JupyterLab and Voila show a PNG output without alt text; they prefer the HTML form, which carries it
        alt = html.escape(self.description, quote=True)
        data = {"text/html": f'<img src="data:image/png;base64,{png}" alt="{alt}">', "image/png": png,
                "text/plain": self.description}
        plt.close(self.fig)
        return data, {"image/png": {"alt": self.description}}

