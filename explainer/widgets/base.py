"""The dashboard pattern every chapter uses: build the figure once, update its artists in place.

A dashboard owns one matplotlib figure, a set of ipywidgets controls and a text read-out.

* :meth:`Dashboard.build` creates every artist once (under ``plt.ioff()``, so ipympl shows the
  figure once).
* :meth:`Dashboard.compute` calls the package with the control values and returns a result; it
  draws nothing. A ``ValueError`` from it is an invalid combination of controls: the message goes
  to the read-out and the last good drawing stays.
* :meth:`Dashboard.render` mutates the artists (``set_data``, ``set_xy``, ``set_text`` ...) from
  the result, and :meth:`Dashboard.describe` returns the read-out (HTML), which states the numbers
  shown, so it doubles as alt text and as the hook of the browser test.
* The figure carries a text alternative for screen readers: an accessible name (the dashboard's title) and a
  description, the read-out as plain text, rewritten on every change (:attr:`Dashboard.figure_alt`, and the ``alt``
  of the PNG in the notebook's output, which the static HTML build shows).
* :meth:`Dashboard.update` sets any controls by name and recomputes: tests and benchmarks drive
  dashboards with it, without a browser. A value a control cannot hold (a string or None for a slider or a
  checkbox, NaN, a number outside the slider's range, an option the dropdown does not offer) is refused like an
  invalid combination: a message in the read-out, the controls and the last good drawing unchanged.

Subclasses declare their controls in :meth:`make_controls` (every control has a ``description``
and a ``tooltip``) and name in ``primary`` the control that the browser test moves.

In JupyterLab with ``%matplotlib widget`` the figure is ipympl's interactive canvas. With any other
backend (nbconvert, a plain script) the figure is shown as a PNG that is refreshed on each update,
and the notebook output also carries a static PNG so that exported HTML shows the figure.
"""

from __future__ import annotations

import atexit
import html
import io
import re
import shutil
import tempfile
import traceback
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from traitlets import TraitError

from explainer._validate import finite_number, whole_number
from explainer.viz.style import apply_style
from explainer.viz.tables import html_table  # noqa: F401  (re-exported for dashboards)
from explainer.widgets.frames import use_fast_frames

__all__ = [
    "Dashboard",
    "register",
    "DASHBOARDS",
    "slider",
    "int_slider",
    "box_sliders",
    "dropdown",
    "checkbox",
    "toggle",
    "html_table",
]

#: Every dashboard class, by name; filled by :func:`register`. The benchmark and the tests use it.
DASHBOARDS: Dict[str, type] = {}


def register(cls):
    """Class decorator: make a dashboard known to ``make bench`` and to the dashboard tests."""
    DASHBOARDS[cls.__name__] = cls
    return cls


_DESC_STYLE = {"description_width": "initial"}

#: Widest figure, in CSS pixels: the notebook column of JupyterLab in a 1280 px browser with the file browser open
#: is 848 px, and ipympl adds a 2 px margin on each side. A wider figure is drawn at a lower dpi to fit.
MAX_FIGURE_PX = 820
#: ipympl draws its toolbar over the canvas (absolutely positioned), where it hides titles and axis labels. In a
#: dashboard it takes a row of its own above the figure instead, shown while the pointer is over the figure.
#: The figure's text alternative is read by screen readers and not shown (the read-out shows the same numbers).
_TOOLBAR_CSS = (
    "<style>.explainer-dashboard .jupyter-matplotlib-toolbar{position:static!important;order:-1;"
    "align-self:flex-end;margin:0 2px 2px 0}"
    ".explainer-sr-only{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;"
    "clip:rect(0,0,0,0);white-space:nowrap;border:0}</style>"
)


def _layout(width: str = "auto") -> widgets.Layout:
    return widgets.Layout(width=width, margin="2px 12px 2px 0")


def slider(description: str, min: float, max: float, step: float, value: float, tooltip: str,
           continuous: bool = True, readout_format: str = ".2f", width: str = "320px") -> widgets.FloatSlider:
    """A float slider with a description and a tooltip (both required: they are the accessible name)."""
    return widgets.FloatSlider(value=value, min=min, max=max, step=step, description=description, tooltip=tooltip,
                               continuous_update=continuous, readout_format=readout_format, style=_DESC_STYLE,
                               layout=_layout(width))


def int_slider(description: str, min: int, max: int, value: int, tooltip: str, step: int = 1,
               continuous: bool = True, width: str = "320px") -> widgets.IntSlider:
    return widgets.IntSlider(value=value, min=min, max=max, step=step, description=description, tooltip=tooltip,
                             continuous_update=continuous, style=_DESC_STYLE, layout=_layout(width))


def box_sliders(x_max: float, y_max: float, defaults: Sequence[float], tooltip: str, step: float = 0.25,
                x_min: float = 0.0, y_min: float = 0.0) -> Dict[str, widgets.FloatSlider]:
    """Four sliders x1, y1, x2, y2 for a box the reader moves and resizes."""
    lims = {"x1": (x_min, x_max), "y1": (y_min, y_max), "x2": (x_min, x_max), "y2": (y_min, y_max)}
    return {k: slider(k, lims[k][0], lims[k][1], step, v, tooltip) for k, v in zip(("x1", "y1", "x2", "y2"), defaults)}


def dropdown(description: str, options, value, tooltip: str, width: str = "auto") -> widgets.Dropdown:
    return widgets.Dropdown(options=options, value=value, description=description, tooltip=tooltip,
                            style=_DESC_STYLE, layout=_layout(width))


def checkbox(description: str, value: bool, tooltip: str) -> widgets.Checkbox:
    return widgets.Checkbox(value=value, description=description, tooltip=tooltip, indent=False,
                            style=_DESC_STYLE, layout=_layout())


def toggle(description: str, options, value, tooltip: str) -> widgets.ToggleButtons:
    return widgets.ToggleButtons(options=options, value=value, description=description, tooltip=tooltip,
                                 style={"description_width": "initial", "button_width": "auto"}, layout=_layout())


_NUMBER_CONTROLS = (widgets.FloatSlider, widgets.FloatText, widgets.BoundedFloatText, widgets.FloatLogSlider)
_INT_CONTROLS = (widgets.IntSlider, widgets.IntText, widgets.BoundedIntText)
_CHOICE_CONTROLS = (widgets.Dropdown, widgets.ToggleButtons, widgets.RadioButtons, widgets.Select,
                    widgets.SelectionSlider)


def _range(w) -> Tuple[float, float]:
    if isinstance(w, widgets.FloatLogSlider):
        return w.base ** w.min, w.base ** w.max
    return w.min, w.max


def _control_value(name: str, w: widgets.Widget, v: Any) -> Any:
    """``v`` as control ``name`` holds it, or ``ValueError`` saying what it takes (booleans for a checkbox, a finite
    number within its range for a slider, one of its options for a dropdown)."""
    if isinstance(w, (widgets.Checkbox, widgets.ToggleButton)):
        if not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {v!r}")
        return bool(v)
    if isinstance(w, _INT_CONTROLS + _NUMBER_CONTROLS):
        x: Any = whole_number(v, name) if isinstance(w, _INT_CONTROLS) else finite_number(v, name)
        if hasattr(w, "min") and hasattr(w, "max"):
            lo, hi = _range(w)
            if not lo <= x <= hi:
                raise ValueError(f"{name} must be in [{lo:g}, {hi:g}], got {x:g}")
        return x
    if isinstance(w, _CHOICE_CONTROLS):
        allowed = [o[1] if isinstance(o, tuple) else o for o in w.options]
        for a in allowed:
            if a is v or (_same_kind(a, v) and a == v):
                return a
        shown = ", ".join(repr(a) for a in allowed[:8]) + (", ..." if len(allowed) > 8 else "")
        raise ValueError(f"{name} must be one of {shown}; got {v!r}")
    return v


def _same_kind(a: Any, b: Any) -> bool:
    """Both numbers (booleans apart), or both of one type: ``1 == True`` and ``0 == 0.0`` must not pick an option by
    accident of Python's equality."""
    def number(x: Any) -> bool:
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))
    return (number(a) and number(b)) or type(a) is type(b)


#: Temporary folders made by dashboards and not yet removed; whatever is left is removed when the kernel exits.
_TEMP_FOLDERS: List[str] = []


def _remove_folders(folders: List[str]) -> None:
    while folders:
        shutil.rmtree(folders.pop(), ignore_errors=True)


atexit.register(_remove_folders, _TEMP_FOLDERS)


@contextmanager
def _torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run the body with ``n`` torch threads (None: leave the setting alone), then restore the setting."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _is_widget_canvas(canvas) -> bool:
    return isinstance(canvas, widgets.DOMWidget)


def _ticks_key(axis) -> Tuple[Any, ...]:
    """What an axis's ticks and their labels are made from: its locators and formatters (the objects themselves:
    ``set_xticks``, ``set_xscale`` ... install new ones) and the positions and labels of fixed ones. With the view
    limits (also in the layout key) this determines the ticks drawn; asking the axis for its tick labels instead
    would run the locator and formatter on every draw, a large part of a fast draw."""
    parts: List[Any] = []
    for ticker in (axis.major, axis.minor):
        loc, fmt = ticker.locator, ticker.formatter
        parts += [loc, fmt, tuple(np.asarray(getattr(loc, "locs", ()), dtype=float).ravel().tolist()),
                  tuple(str(t) for t in getattr(fmt, "seq", ()))]
    return tuple(parts)


class CachedFigureDraw:
    """Redraw only what changed: the figure's static layer is cached as pixels.

    ipympl renders the whole figure with Agg on the kernel for every update, and a full draw of a
    figure with ticks and a legend costs far more than the few artists a control moves. This wraps
    ``figure.draw``: every artist that a dashboard mutates (matplotlib marks it ``stale``) becomes
    ``animated`` and is drawn over a cached copy of the rest. The cache is rebuilt whenever the
    layout can have changed (figure size, dpi, axis limits, axes positions, tick or legend changes),
    so what ipympl sends is always the complete image. Dynamic artists are drawn above static ones.
    """

    def __init__(self, fig):
        self.fig = fig
        self._orig_draw = fig.draw
        self.dynamic: list = []
        self._dynamic_ids: set = set()
        self._background = None
        self._key = None
        self._primed = False
        self.full_draws = 0
        self.fast_draws = 0
        fig.draw = self.draw

    def _candidates(self):
        for ax in self.fig.axes:
            # axis objects turn stale on every set_xlim; what they draw is covered by the layout key
            axes_objects = {id(ax.xaxis), id(ax.yaxis)}
            structural = {id(ax.patch), *(id(s) for s in ax.spines.values())}
            if ax.legend_ is not None:
                structural.add(id(ax.legend_))
            for a in ax.get_children():
                if id(a) not in axes_objects:
                    yield a, id(a) in structural
        sup = [getattr(self.fig, n, None) for n in ("_suptitle", "_supxlabel", "_supylabel")]
        for a in (*self.fig.texts, *self.fig.lines, *self.fig.patches, *self.fig.images, *[t for t in sup if t is not None]):
            yield a, False
        for a in self.fig.legends:
            yield a, True

    def _scan(self) -> bool:
        """Mark newly changed artists dynamic; True when the cached background is no longer valid."""
        invalid = False
        for a, structural in self._candidates():
            if not a.stale or id(a) in self._dynamic_ids:
                continue
            if structural:
                invalid = True
            else:
                a.set_animated(True)
                self.dynamic.append(a)
                self._dynamic_ids.add(id(a))
                invalid = True
        return invalid

    def _layout_key(self, renderer):
        axes = tuple(
            (tuple(ax.get_position().bounds), tuple(ax.viewLim.bounds), ax.get_visible(),
             _ticks_key(ax.xaxis), _ticks_key(ax.yaxis), ax.xaxis.label.get_text(), ax.yaxis.label.get_text())
            for ax in self.fig.axes
        )
        return (getattr(renderer, "width", None), getattr(renderer, "height", None), self.fig.dpi, axes)

    def _draw_dynamic(self, renderer):
        for a in sorted(self.dynamic, key=lambda a: a.get_zorder()):
            if a.get_visible():
                a.draw(renderer)

    def draw(self, renderer):
        if "draw_path" in vars(renderer):  # a layout pass with drawing disabled (savefig, tight bbox): no pixels
            return self._orig_draw(renderer)
        if not self._primed:  # the first draw shows everything as built; changes are tracked from here on
            self._primed = True
            self.full_draws += 1
            out = self._orig_draw(renderer)
            # freeze the layout computed for the first drawing: the axes then never jump while a control
            # moves, and later full draws skip the (iterative, not idempotent) constrained-layout solver
            if self.fig.get_layout_engine() is not None:
                self.fig.set_layout_engine("none")
            return out
        invalid = self._scan()
        key = self._layout_key(renderer)
        can_cache = hasattr(renderer, "buffer_rgba") and renderer is getattr(self.fig.canvas, "renderer", None)
        if can_cache and not invalid and self._background is not None and key == self._key:
            # the whole pixel buffer, not copy_from_bbox(fig.bbox): at a dpi that fits the figure to the notebook
            # column the bbox is a fraction of a pixel short (413.99999 px), its top row would stay transparent,
            # and ipympl then sends every frame in full instead of the changed pixels
            np.copyto(np.asarray(renderer.buffer_rgba()), self._background)
            self._draw_dynamic(renderer)
            self.fig.stale = False
            self.fast_draws += 1
            return None
        self.full_draws += 1
        out = self._orig_draw(renderer)  # static layer: animated artists are skipped by Axes.draw
        if can_cache:
            self._background = np.array(renderer.buffer_rgba())
            self._key = self._layout_key(renderer)
        self._draw_dynamic(renderer)
        self.fig.stale = False
        return out


class Dashboard:
    """Base class of the course's dashboards (see the module docstring for the pattern)."""

    #: Figure size in inches (at 90 dpi); keep figures small: Agg time grows with pixels.
    figsize: Tuple[float, float] = (8.0, 4.0)
    #: Heading shown above the figure.
    title: str = ""
    #: Name of the control that the browser test moves.
    primary: str = ""
    #: Cache the unchanging part of the figure as pixels (see :class:`CachedFigureDraw`).
    cache_static_layer: bool = True
    #: Torch threads for :meth:`compute`, or None for the process's setting. A dashboard whose computations are
    #: all small tensors sets 1: such an operation is never split between threads (its results are the same bits),
    #: yet with two threads each call enters a parallel region, which on a busy machine waits for the second
    #: thread to be scheduled (about 10 ms per call instead of microseconds). Left None where a computation is
    #: large enough to be split (the detector's), since the split changes float32 sums in their last bits.
    torch_threads: Optional[int] = None

    def __init__(self, figure_name: Optional[str] = None, **params: Any):
        apply_style()
        self.controls: Dict[str, widgets.Widget] = self.make_controls()
        for name, w in self.controls.items():
            if not getattr(w, "description", "") or not getattr(w, "tooltip", ""):
                raise ValueError(f"control {name!r} of {type(self).__name__} needs a description and a tooltip")
        if self.primary not in self.controls:
            raise ValueError(f"{type(self).__name__}.primary must name one of its controls {list(self.controls)}")
        self.error: Optional[str] = None
        self.result: Any = None
        self.n_updates = 0
        self._holding = False
        self.figure_name = figure_name or f"explainer:{type(self).__name__}"
        with plt.ioff():
            plt.close(self.figure_name)  # re-running a cell replaces the figure instead of leaking one
            dpi = min(float(plt.rcParams["figure.dpi"]), MAX_FIGURE_PX / self.figsize[0])
            self.fig = plt.figure(num=self.figure_name, figsize=self.figsize, dpi=dpi, layout="constrained")
            self.build(self.fig)
        self.fast_draw = CachedFigureDraw(self.fig) if self.cache_static_layer else None
        self._static_image: Optional[widgets.Image] = None
        canvas: Any = self.fig.canvas   # ipympl's Canvas when the widget backend is active
        if _is_widget_canvas(canvas):
            canvas.header_visible = False
            canvas.footer_visible = False
            canvas.resizable = False
            canvas.toolbar_position = "top"          # a horizontal row, placed above the figure by _TOOLBAR_CSS
            canvas.toolbar_visible = "fade-in-fade-out"
            canvas.capture_scroll = False
            use_fast_frames(canvas)
            fig_widget = canvas
        else:
            self._static_image = widgets.Image(format="png")
            fig_widget = self._static_image
        self.figure_label = f"Figure: {self.title or type(self).__name__}"
        self.figure_description = ""
        self._alt_id = f"explainer-alt-{id(self):x}"
        #: the figure's accessible name and description, placed just before the figure (see :meth:`_describe_figure`)
        self.figure_alt = widgets.HTML(value="", layout=widgets.Layout(margin="0"))
        self.figure_alt.add_class("explainer-figure-alt")
        self.readout = widgets.HTML(value="", layout=widgets.Layout(min_height="2em"))
        self.readout.add_class("explainer-readout")
        self.controls[self.primary].add_class("explainer-primary")
        for w in self.controls.values():
            w.observe(self._on_control, names="value")
        children: List[widgets.Widget] = [widgets.HTML(_TOOLBAR_CSS, layout=widgets.Layout(display="none"))]
        if self.title:
            children.append(widgets.HTML(f"<b style='font-size:15px'>{html.escape(self.title)}</b>"))
        children += [self.figure_alt, fig_widget, self.layout_controls(), self.readout]
        self.widget = widgets.VBox(children)
        self.widget.add_class("explainer-dashboard")
        self.update(**params)

    # -- to implement -----------------------------------------------------------------------
    def make_controls(self) -> Dict[str, widgets.Widget]:
        raise NotImplementedError

    def build(self, fig) -> None:
        raise NotImplementedError

    def compute(self, **params: Any) -> Any:
        raise NotImplementedError

    def render(self, result: Any) -> None:
        raise NotImplementedError

    def describe(self, result: Any) -> str:
        return ""

    def layout_controls(self) -> widgets.Widget:
        """Controls in a wrapping row; override to group them."""
        return widgets.HBox(list(self.controls.values()), layout=widgets.Layout(flex_flow="row wrap"))

    # -- driving ------------------------------------------------------------------------------
    @property
    def params(self) -> Dict[str, Any]:
        return {k: w.value for k, w in self.controls.items()}

    def update(self, **params: Any) -> str:
        """Set controls by name, recompute and redraw; returns the read-out as plain text."""
        unknown = sorted(set(params) - set(self.controls))
        if unknown:
            raise ValueError(f"unknown control(s) {unknown} for {type(self).__name__}; controls: {sorted(self.controls)}")
        values, problems = {}, []
        for k, v in params.items():
            try:
                values[k] = _control_value(k, self.controls[k], v)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            self._show_error("; ".join(problems))
            return self.readout_text
        before = {k: self.controls[k].value for k in values}
        self._holding = True
        try:
            for k, v in values.items():
                self.controls[k].value = v
        except TraitError as e:  # a value the control itself refuses: put every control back
            for k, v in before.items():
                self.controls[k].value = v
            self._show_error(f"{k}: {' '.join(str(e).split())[:300]}")
            return self.readout_text
        finally:
            self._holding = False
        self.refresh()
        return self.readout_text

    def _on_control(self, change) -> None:
        if not self._holding:
            self.refresh()

    def refresh(self) -> None:
        """Recompute from the current controls; errors go to the read-out, never to the notebook."""
        try:
            with _torch_threads(self.torch_threads):
                result = self.compute(**self.params)
        except ValueError as e:
            self._show_error(str(e))
            return
        except Exception as e:  # a dashboard must never print a traceback into the notebook
            self._show_error(f"unexpected {type(e).__name__}: {e}", internal=traceback.format_exc())
            return
        try:
            self.render(result)
            text = self.describe(result)
        except Exception as e:
            self._show_error(f"could not draw: {type(e).__name__}: {e}", internal=traceback.format_exc())
            return
        self.error = None
        self.result = result
        self.n_updates += 1
        self.readout.value = text
        self._describe_figure()
        self._redraw()

    def _describe_figure(self) -> None:
        """Give the figure, for screen readers, its name and a description of what it shows now: the read-out's
        text. A polite live region, so that a change is announced once the reader pauses. An invalid setting leaves
        the figure, and so its description, as they were."""
        self.figure_description = self.readout_text
        name = html.escape(self.figure_label, quote=True)
        desc = html.escape(self.figure_description).replace("\n", "<br>")
        self.figure_alt.value = (
            f"<div class='explainer-sr-only' role='img' aria-label='{name}' aria-describedby='{self._alt_id}'></div>"
            f"<div class='explainer-sr-only' id='{self._alt_id}' aria-live='polite'>{desc}</div>"
        )

    @property
    def alt_text(self) -> str:
        """The figure's text alternative in one string: its name, then what it shows now."""
        return f"{self.figure_label}. Shows now: {' '.join(self.figure_description.split())}"

    def _show_error(self, message: str, internal: Optional[str] = None) -> None:
        self.error = message
        self._internal_traceback = internal
        self.readout.value = (
            "<div style='color:#B00020;font-weight:bold'>&#9888; "
            + html.escape(message)
            + "</div><div style='color:#555'>The figure still shows the last valid setting.</div>"
        )

    def _redraw(self) -> None:
        if self._static_image is not None:
            self._static_image.value = self.png()
        elif getattr(self.fig.canvas, "syncing_data_url", True):
            # no browser view yet (a notebook executed headless, a test): ask for a draw when one is shown
            self.fig.canvas.draw_idle()
        else:
            # A browser shows the figure: draw and send the new image now. draw_idle() would first ask the
            # browser to ask back for a draw, one more round trip through the server for every move of a control;
            # ipywidgets already merges the moves that arrive while the kernel is busy.
            self.fig.canvas.draw()

    @property
    def readout_text(self) -> str:
        """The read-out without markup (what a screen reader would say)."""
        text = re.sub(r"<(br|/tr|/div|/p|/caption|/h\d)\s*/?>", "\n", self.readout.value)
        text = re.sub(r"</t[dh]>", "  ", text)
        text = re.sub(r"<[^>]+>", "", text)
        text = html.unescape(text)
        return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())

    # -- display ------------------------------------------------------------------------------
    def png(self) -> bytes:
        """The figure as PNG bytes, drawn on the figure's own Agg canvas (reuses the cached static layer)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from PIL import Image

        canvas = self.fig.canvas
        if isinstance(canvas, FigureCanvasAgg):
            FigureCanvasAgg.draw(canvas)
            buf = io.BytesIO()
            Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buf, format="png")
            return buf.getvalue()
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.fig.dpi)
        return buf.getvalue()

    def _repr_mimebundle_(self, **kwargs):
        import base64

        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["image/png"] = base64.b64encode(self.png()).decode("ascii")
        bundle["text/plain"] = self.readout_text or type(self).__name__
        # the static image's text alternative travels with it in the output's metadata (the HTML build uses it)
        return bundle, {"image/png": {"alt": self.alt_text}}

    def temporary_folder(self) -> str:
        """A new temporary folder for this dashboard's files: removed by :meth:`close`, or when the kernel exits."""
        path = tempfile.mkdtemp(prefix="explainer-dashboard-")
        _TEMP_FOLDERS.append(path)
        self.__dict__.setdefault("_temp_folders", []).append(path)
        return path

    def close(self) -> None:
        """Close the figure and the widgets, and remove the dashboard's temporary folders."""
        plt.close(self.fig)
        self.widget.close()
        mine = self.__dict__.pop("_temp_folders", [])
        for path in mine:
            if path in _TEMP_FOLDERS:
                _TEMP_FOLDERS.remove(path)
        _remove_folders(mine)

    # -- benchmark hooks -----------------------------------------------------------------------
    def bench_states(self) -> List[Dict[str, Any]]:
        """Control settings a benchmark cycles through: by default the primary control over its range."""
        w = self.controls[self.primary]
        if hasattr(w, "min") and hasattr(w, "max"):
            lo, hi = float(w.min), float(w.max)
            n = 12
            vals = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
            if isinstance(w, widgets.IntSlider):
                vals = sorted({int(round(v)) for v in vals})
            return [{self.primary: v} for v in vals]
        if hasattr(w, "options"):
            opts = [o[1] if isinstance(o, tuple) else o for o in w.options]
            return [{self.primary: o} for o in opts]
        if isinstance(w, widgets.Checkbox):
            return [{self.primary: True}, {self.primary: False}]
        raise NotImplementedError(f"{type(self).__name__} must define bench_states()")
