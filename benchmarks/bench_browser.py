"""Responsiveness as a reader feels it: from moving a dashboard's control to the new figure on the screen.

Serves the course with Voila (as `make present` does; the kernel, ipympl and the widget messages are those of
JupyterLab) and drives Chromium through Playwright. In the page, a hook on ``CanvasRenderingContext2D.drawImage``
notes when ipympl copies a new image onto a dashboard's visible canvas, and the frame after it
(``requestAnimationFrame``) is when it is painted; listeners note the input event's own timestamp
(``event.timeStamp``, the page's clock). For every dashboard, the primary control is moved once unmeasured
(the first move pays one-time costs: it is reported apart) and then 20 times as a reader moves it (a slider five
steps right one at a time, then five back; the next option of a menu; the other button of a toggle), waiting each
time until the figure is painted and the page is quiet. Latency = painted - input event: the kernel's
computation and drawing, the PNG ipympl sends, and the browser decoding and painting it.

Rows: p95 (target <= 150 ms on the course's 2-core machine) and p50 per dashboard, with the machine's load average
during the measurement. ``BENCH_BROWSER_CHAPTERS=01,04`` measures only those chapters (by number). Needs Chromium at /usr/bin/chromium (or $CHROMIUM) and Playwright's Python package.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from typing import Dict, List, Optional, Tuple

from .common import Row, percentiles

TARGET_MS = 150.0
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]

#: Installed before the page's own scripts: paint times per dashboard, and the time of the last input event.
HOOK = """
window.__paints = [];
window.__input = null;
for (const kind of ['keydown', 'pointerdown', 'change', 'input']) {
  document.addEventListener(kind, e => { if (window.__input === null) window.__input = e.timeStamp; }, true);
}
const draw = CanvasRenderingContext2D.prototype.drawImage;
CanvasRenderingContext2D.prototype.drawImage = function (...args) {
  const canvas = this.canvas;
  const dash = canvas && canvas.closest ? canvas.closest('.explainer-dashboard') : null;
  if (dash) {
    const index = Array.from(document.querySelectorAll('.explainer-dashboard')).indexOf(dash);
    const drawn = performance.now();
    requestAnimationFrame(() => window.__paints.push({index: index, drawn: drawn, painted: performance.now()}));
  }
  return draw.apply(this, args);
};
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard_names(path) -> List[str]:
    """The dashboards of a chapter, in page order (one per code cell that builds one)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    names = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            found = re.findall(r"(\w+Dashboard)\(", "".join(cell["source"]))
            names += found[:1]
    return names


def _move(control, page, step: int) -> bool:
    """Move the control once as a reader would (``step`` counts the moves); False when it cannot move."""
    handle = control.locator(".noUi-handle")
    if handle.count():
        h = handle.first
        now, lo, hi = (float(h.get_attribute(a) or 0) for a in ("aria-valuenow", "aria-valuemin", "aria-valuemax"))
        right = step % 10 < 5
        if (right and now >= hi) or (not right and now <= lo):  # at the end of the range: come back
            right = not right
        h.focus()
        page.keyboard.press("ArrowRight" if right else "ArrowLeft")
        return True
    select = control.locator("select")
    if select.count():
        n = select.first.locator("option").count()
        current = select.first.evaluate("s => s.selectedIndex")
        select.first.select_option(index=(current + 1) % n)
        return n > 1
    box = control.locator("input[type=checkbox]")
    if box.count():
        box.first.click()
        return True
    buttons = control.locator("button")
    for i in range(buttons.count()):
        if "mod-active" not in (buttons.nth(i).get_attribute("class") or ""):
            buttons.nth(i).click()
            return True
    return False


def _one_move(page, dash, index: int, step: int, timeout_s: float = 10.0) -> Optional[float]:
    """Latency in seconds of one move of dashboard ``index``'s primary control, or None when nothing was painted."""
    page.evaluate("() => { window.__input = null; window.__paints = []; }")
    if not _move(dash.locator(".explainer-primary").first, page, step):
        return None
    deadline, first, last_count, quiet_since = time.time() + timeout_s, None, 0, time.time()
    while time.time() < deadline:
        time.sleep(0.02)
        got = page.evaluate("i => ({input: window.__input, paints: window.__paints.filter(p => p.index === i)})", index)
        if got["input"] is None:
            continue
        paints = [p for p in got["paints"] if p["drawn"] >= got["input"]]
        if paints and first is None:
            first = (paints[0]["painted"] - got["input"]) / 1000.0
        if len(paints) != last_count:
            last_count, quiet_since = len(paints), time.time()
        if first is not None and time.time() - quiet_since > 0.3:
            break
    return first


def _measure_chapter(browser, url: str, path, moves: int) -> Dict[str, Tuple[Optional[float], List[float]]]:
    """Per dashboard: the first move's latency (s) and those of the ``moves`` moves after it."""
    names = _dashboard_names(path)
    if not names:
        return {}
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script(HOOK)
    try:
        page.goto(url, wait_until="load", timeout=600000)
        deadline = time.time() + 120
        while page.locator(".explainer-dashboard canvas").count() < len(names) and time.time() < deadline:
            time.sleep(0.3)
        time.sleep(2.0)
        out: Dict[str, Tuple[Optional[float], List[float]]] = {}
        dashboards = page.locator(".explainer-dashboard")
        for i, name in enumerate(names[:dashboards.count()]):
            dash = dashboards.nth(i)
            dash.scroll_into_view_if_needed()
            time.sleep(0.5)
            got = [_one_move(page, dash, i, step) for step in range(moves + 1)]
            out[name] = (got[0], [g for g in got[1:] if g is not None])
        return out
    finally:
        page.close()


def _chapters(paths: List) -> List:
    """The chapters to measure: all, or those numbered in $BENCH_BROWSER_CHAPTERS (comma-separated)."""
    wanted = {int(n) for n in os.environ.get("BENCH_BROWSER_CHAPTERS", "").split(",") if n.strip()}
    return [p for p in paths if not wanted or int(p.name[:2]) in wanted]


def partial() -> bool:
    """True when $BENCH_BROWSER_CHAPTERS restricts the measurement to some chapters (``--merge`` then keeps the rows
    of the other chapters' dashboards)."""
    return bool(os.environ.get("BENCH_BROWSER_CHAPTERS", "").strip())


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _rows(samples: Dict[str, Tuple[Optional[float], List[float]]], moves: int, load_before: str,
          load_after: str) -> List[Row]:
    rows = []
    for name, (first, s) in sorted(samples.items()):
        if not s:
            rows.append(Row("browser latency", f"{name}: p95 input to painted", float("nan"), "ms",
                            f"<= {TARGET_MS:g} ms", False, "no figure was painted after moving its control"))
            continue
        p = percentiles(s)
        first_ms = "nothing painted" if first is None else f"{first * 1000:.0f} ms"
        detail = (f"p50 {p['p50']:.0f} ms over {p['n']} of {moves} moves (Voila, Chromium 1280 x 800); "
                  f"first move (not in the percentiles) {first_ms}; "
                  f"load average (1/5/15 min) {load_before} before, {load_after} after, on {os.cpu_count()} cores")
        rows.append(Row("browser latency", f"{name}: p95 input to painted", p["p95"], "ms", f"<= {TARGET_MS:g} ms",
                        p["p95"] <= TARGET_MS and p["n"] == moves, detail))
    return rows


def run(quick: bool = False) -> List[Row]:
    from tools.notebooks import ROOT, notebook_paths
    from tools.present import chapter_url, stop_server, voila_command, voila_env

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [Row("browser latency", "not measured", float("nan"), "ms", "", None,
                    "Playwright's Python package is missing (pip install playwright; never 'playwright install')")]
    if not os.path.exists(CHROMIUM):
        return [Row("browser latency", "not measured", float("nan"), "ms", "", None, f"no Chromium at {CHROMIUM}")]
    moves = 6 if quick else 20
    port, token = _free_port(), secrets.token_hex(16)
    log = open(ROOT / "build" / "bench_browser_voila.log", "w") if (ROOT / "build").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(voila_command(port), env=voila_env(token=token), cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{base}/?token={token}", timeout=2)
                break
            except Exception:
                time.sleep(0.5)
        samples: Dict[str, Tuple[Optional[float], List[float]]] = {}
        load_before = _load()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for path in _chapters(notebook_paths()):
                    samples.update(_measure_chapter(browser, chapter_url(base, path.name, token), path, moves))
            finally:
                browser.close()
        return _rows(samples, moves, load_before, _load())
    finally:
        stop_server(proc, None if log is subprocess.DEVNULL else log)
