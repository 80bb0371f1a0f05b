"""Every chapter in a real Chromium: in JupyterLab as a learner opens it, and in Voila as `make present` serves it.

JupyterLab, at a laptop's 1280 x 800 with the file browser open: open the chapter, "Run All Cells", assert that no
cell shows an error and that every widget rendered (a version mismatch between ipywidgets/ipympl and JupyterLab
shows up here and nowhere else), that no dashboard or self-check is wider than the notebook column (each output's
content against its width) and that ipympl's toolbar sits clear of the figure; then move the primary control of
each dashboard and assert that both its figure and its read-out changed, and answer a self-check question.

Voila, at 1280 x 800: each chapter renders with its code hidden, no error, every dashboard live (moving one
control changes its figure), nothing wider than the page's column, its navigation links pointing at the chapters
as Voila serves them; the glossary link is served, and following "next" from chapter 0 opens chapter 1.

Screenshots go to build/screenshots/. Needs Debian's Chromium (``apt-get install -y chromium``) and Playwright's
Python package; the browser is never downloaded. Outside CI the test is skipped when Chromium is missing; with
CI=true it must run.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tools.chapters import CHAPTERS
from tools.notebooks import NOTEBOOK_DIR, ROOT
from tools.present import chapter_url, stop_server, voila_command, voila_env

pytestmark = [pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
#: A laptop: a 1280 px wide browser (JupyterLab's file browser open takes 250 px of it).
VIEWPORT = {"width": 1280, "height": 800}
#: Console errors the page may log without anything being wrong, as (pattern, why it is harmless). Empty: with
#: the pinned JupyterLab, ipywidgets and ipympl, running every chapter logs no error at all; add an entry only with
#: the reason it is harmless.
HARMLESS_CONSOLE_ERRORS: list = []
#: Outputs wider than their column, as [{"i", "over", "what"}]: the dashboards and self-checks of the page.
OVERFLOW_JS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output')).map((o, i) => {
    const box = o.querySelector('.explainer-dashboard, .explainer-selfcheck');
    if (!box) return null;
    const right = o.getBoundingClientRect().right;
    let over = o.scrollWidth - o.clientWidth;
    for (const e of o.querySelectorAll('canvas, table, img, .jupyter-matplotlib-figure, .widget-box, .widget-radio-box'))
        over = Math.max(over, e.getBoundingClientRect().right - right);
    return {i: i, over: Math.round(over), what: box.innerText.slice(0, 50)};
}).filter(x => x && x.over > 1)"""
#: ipympl toolbars that overlap their figure's canvas.
TOOLBAR_JS = """() => Array.from(document.querySelectorAll('.explainer-dashboard')).map((d, i) => {
    const t = d.querySelector('.jupyter-matplotlib-toolbar'), c = d.querySelector('.jupyter-matplotlib-canvas-div');
    if (!t || !c) return null;
    const a = t.getBoundingClientRect(), b = c.getBoundingClientRect();
    const overlap = a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
    return overlap ? {i: i, toolbar: [a.left, a.top, a.right, a.bottom], canvas: [b.left, b.top, b.right, b.bottom]} : null;
}).filter(x => x)"""


def _need_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "Playwright's Python package (pip install playwright; never 'playwright install')"
    else:
        missing = None if Path(CHROMIUM).exists() else f"Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI but {missing} is missing")
        pytest.skip(f"browser test needs {missing}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scratch_course(base: Path) -> Path:
    """A copy of the notebooks and docs, laid out as in the repository (the chapters link to ../docs)."""
    root = base / "course"
    shutil.copytree(NOTEBOOK_DIR, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "docs", root / "docs")
    return root


def _serve(cmd, env, cwd: Path, log_path: Path, ready_url: str, what: str):
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(ready_url, timeout=2)
            return proc, log
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"{what} did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.5)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free loopback port, serving a scratch copy of the course."""
    _need_browser()
    base = tmp_path_factory.mktemp("lab")
    root = _scratch_course(base)
    settings = base / "settings"
    # render every cell (no virtual scrolling) so that the test sees all outputs; no news pop-ups
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(base / "ws"),
               JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(base / "runtime"))
    env.pop("MPLBACKEND", None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    url = f"http://127.0.0.1:{port}"
    proc, log = _serve(cmd, env, root, base / "lab.log", f"{url}/api/status?token={token}", "JupyterLab")
    yield {"url": url, "token": token, "root": root, "log": base / "lab.log"}
    stop_server(proc, log)


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    """Voila as `make present` runs it (tools.present.voila_command), serving a scratch copy of the course."""
    _need_browser()
    base = tmp_path_factory.mktemp("voila")
    root = _scratch_course(base)
    port, token = _free_port(), secrets.token_hex(16)
    env = voila_env(dict(os.environ, JUPYTER_CONFIG_DIR=str(base / "config"), JUPYTER_RUNTIME_DIR=str(base / "runtime")),
                    token=token)
    url = f"http://127.0.0.1:{port}"
    proc, log = _serve(voila_command(port, root=root), env, root, base / "voila.log",
                       f"{url}/?token={token}", "Voila")
    yield {"url": url, "token": token, "root": root, "log": base / "voila.log"}
    stop_server(proc, log)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


# --------------------------------------------------------------------------------------------------
# helpers shared by both front ends
# --------------------------------------------------------------------------------------------------
def _n_dashboards(path: Path) -> int:
    nb = json.loads(path.read_text())
    return sum("Dashboard(" in "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def _move(control, page) -> str:
    """Move one control the way a reader would; returns what was done."""
    handle = control.locator(".noUi-handle")
    if handle.count():
        handle.first.focus()
        page.keyboard.press("ArrowRight")
        return "slider +1 step"
    select = control.locator("select")
    if select.count():
        options = select.first.locator("option").all_text_contents()
        current = select.first.evaluate("s => s.selectedIndex")
        select.first.select_option(index=(current + 1) % len(options))
        return f"dropdown -> option {(current + 1) % len(options)}"
    box = control.locator("input[type=checkbox]")
    if box.count():
        box.first.click()
        return "checkbox toggled"
    buttons = control.locator("button")
    if buttons.count() > 1:
        for i in range(buttons.count()):
            if "mod-active" not in (buttons.nth(i).get_attribute("class") or ""):
                buttons.nth(i).click()
                return f"toggle button {i}"
    raise AssertionError("the primary control is neither a slider, a dropdown, a checkbox nor toggle buttons")


def _check_dashboards(page, name: str, expected: int, shot_prefix: str) -> None:
    """Every dashboard rendered an interactive canvas; moving its primary control changes figure and read-out."""
    dashboards = page.locator(".explainer-dashboard")
    n = dashboards.count()
    assert n == expected, f"{name}: {n} of {expected} dashboards rendered"
    for i in range(n):
        dash = dashboards.nth(i)
        dash.scroll_into_view_if_needed()
        assert dash.locator("canvas").count() >= 1, f"{name}: dashboard {i} has no interactive canvas (ipympl)"
        readout = dash.locator(".explainer-readout")
        container = dash.locator(".jupyter-matplotlib-canvas-container")
        figure = container.first if container.count() else dash.locator("canvas").first
        before_text, before_img = readout.inner_text(), figure.screenshot()
        did = _move(dash.locator(".explainer-primary").first, page)
        deadline = time.time() + 20
        while time.time() < deadline:
            time.sleep(0.3)
            after_text = readout.inner_text()
            if after_text != before_text and figure.screenshot() != before_img:
                break
        else:
            raise AssertionError(f"{name}: dashboard {i}: after '{did}' the "
                                 + ("read-out" if readout.inner_text() == before_text else "figure") + " did not change")
        assert "\u26a0" not in after_text, f"{name}: dashboard {i} shows a message: {after_text}"
        dash.screenshot(path=str(SHOTS / f"{shot_prefix}__dashboard{i}.png"))


def _check_fit(page, name: str) -> None:
    over = page.evaluate(OVERFLOW_JS)
    assert not over, f"{name}: outputs wider than the column (px beyond its right edge): {over}"
    covered = page.evaluate(TOOLBAR_JS)
    assert not covered, f"{name}: ipympl's toolbar overlaps the figure: {covered}"


def _answer_selfcheck(page, name: str) -> None:
    """Answer the first self-check question as a reader would; the kernel's verdict must appear."""
    q = page.locator(".explainer-selfcheck-question").first
    q.scroll_into_view_if_needed()
    radios = q.locator("input[type=radio]")
    if radios.count():
        radios.first.check()
    else:
        q.locator("input[type=text]").fill("1")
    q.locator("button", has_text="Check").click()
    feedback = q.locator(".explainer-selfcheck-feedback")
    deadline = time.time() + 30
    while time.time() < deadline and not re.match(r"^[\u2713\u2717]", feedback.inner_text().strip()):
        time.sleep(0.2)
    said = feedback.inner_text().strip()
    assert re.match(r"^(\u2713 Right\.|\u2717 Not quite\. Hint:)", said), f"{name}: self-check answered {said!r}"


def _console(page) -> list:
    """Errors the page logs, and every request to another host than the course's server (it works offline)."""
    errors: list = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.on("request", lambda r: errors.append(f"request to another host: {r.url}")
            if re.match(r"^(https?|wss?)://", r.url) and not re.match(r"^(https?|wss?)://127\.0\.0\.1[:/]", r.url)
            else None)
    return errors


def _unexplained(errors: list) -> list:
    return [m for m in errors if not any(re.search(pat, m) for pat, _ in HARMLESS_CONSOLE_ERRORS)]


@contextmanager
def _closing(page, shot: str):
    try:
        yield page
    except BaseException:
        page.screenshot(path=str(SHOTS / f"{shot}__FAILED.png"), full_page=True)
        raise
    finally:
        page.close()


@contextmanager
def _page(browser, shot: str):
    """A fresh page at the laptop viewport; a screenshot of it afterwards (``__FAILED`` when the test failed), and
    no console error or request to another host allowed."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport=VIEWPORT)
    errors = _console(page)
    try:
        yield page
        page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
        assert not _unexplained(errors), f"{shot}: the page logged errors: {errors[:5]}"
    except BaseException:
        page.screenshot(path=str(SHOTS / f"{shot}__FAILED.png"), full_page=True)
        raise
    finally:
        page.close()


# --------------------------------------------------------------------------------------------------
# JupyterLab
# --------------------------------------------------------------------------------------------------
def _accept_kernel_dialog(page, wait_s: float = 4.0) -> None:
    """If JupyterLab asks which kernel to start (it can, while kernel specs are still loading), accept
    its proposal, the notebook's own python3 kernel, as a reader would."""
    deadline = time.time() + wait_s
    while time.time() < deadline:
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
            return
        time.sleep(0.2)


def _wait_idle(page, timeout_s: float) -> None:
    """Wait until no cell shows the busy prompt [*] and the kernel reports idle."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        busy = page.locator(".jp-InputArea-prompt", has_text="[*]").count()
        kernel_busy = page.locator(".jp-Notebook-ExecutionIndicator:not([data-status='idle'])").count()
        if busy == 0 and kernel_busy == 0:
            return
        time.sleep(0.25)
    raise AssertionError("the notebook did not finish running in time")


def _open_in_lab(page, lab, path: Path) -> None:
    page.goto(f"{lab['url']}/lab/workspaces/{path.stem}/tree/notebooks/{path.name}?reset&token={lab['token']}",
              wait_until="domcontentloaded", timeout=60000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60000)
    _accept_kernel_dialog(page)
    if not page.locator("#filebrowser").is_visible():  # a laptop user works with the file browser open
        page.locator(".jp-SideBar [data-id='filebrowser']").first.click()
    assert page.locator("#filebrowser").is_visible(), "the file browser should be open"


def _run_all(page, path: Path) -> None:
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=60000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator("li[data-command='runmenu:run-all']").click()
    time.sleep(1.0)
    _wait_idle(page, timeout_s=240)
    # let widget views render (ipywidgets renders views asynchronously after the kernel is idle)
    for sel in (".explainer-dashboard", ".explainer-selfcheck"):
        try:
            page.locator(sel).first.wait_for(timeout=30000)
        except Exception:
            pass  # reported by the assertions that follow
    time.sleep(1.5)


def _check_cells_ran(page, name: str) -> None:
    errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, f"{name}: cell error: {errors.first.inner_text()[:1500]}"
    text = page.locator(".jp-Notebook").inner_text()
    for bad in ("Error displaying widget", "model not found", "not registered", "Traceback (most recent call last)"):
        assert bad not in text, f"{name}: '{bad}' shown in the notebook"
    n_code = page.locator(".jp-CodeCell").count()
    prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    n_done = sum(1 for t in prompts if re.match(r"^\s*\[\d+\]", t))
    assert n_code and n_done == n_code, f"{name}: {n_done} of {n_code} code cells ran"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_in_jupyterlab(lab, browser, path):
    with _page(browser, path.stem) as page:
        _open_in_lab(page, lab, path)
        _run_all(page, path)
        _check_cells_ran(page, path.name)
        assert page.locator(".explainer-selfcheck").count() == 1, f"{path.name}: the self-check did not render"
        _check_fit(page, path.name)
        _check_dashboards(page, path.name, _n_dashboards(path), path.stem)
        _answer_selfcheck(page, path.name)


def test_navigation_links_open_chapters_in_jupyterlab(lab, browser):
    """The header's "next" link opens the next chapter, and the glossary link opens the glossary."""
    with _page(browser, "navigation") as page:
        _open_in_lab(page, lab, NOTEBOOKS[3])
        header = page.locator(".jp-MarkdownCell").first
        header.locator("a", has_text="next:").click()
        page.locator(".lm-TabBar-tab.lm-mod-current", has_text=CHAPTERS[4].file[:12]).wait_for(timeout=30000)
        page.locator(".jp-MarkdownCell a:visible", has_text="glossary").first.click()
        page.locator(".lm-TabBar-tab.lm-mod-current", has_text="glossary.md").wait_for(timeout=30000)


# --------------------------------------------------------------------------------------------------
# Voila (make present)
# --------------------------------------------------------------------------------------------------
def _check_voila_links(page, voila, path: Path) -> None:
    """The header's links point where Voila serves the chapters, and the glossary link is served."""
    hrefs = page.eval_on_selector_all("a[href$='.ipynb'], a[href$='.md']", "els => els.map(e => e.href)")
    base = chapter_url(voila["url"], "")
    for href in hrefs:
        if href.endswith(".ipynb"):
            assert href.startswith(base) and (NOTEBOOK_DIR / href[len(base):]).is_file(), href
    glossary = [h for h in hrefs if h.endswith("/docs/glossary.md")]
    assert glossary, f"{path.name}: no link to the glossary"
    reply = page.request.get(glossary[0])
    assert reply.ok and "# Glossary" in reply.text(), f"{path.name}: {glossary[0]} -> {reply.status}"


def _open_in_voila(page, voila, path: Path) -> None:
    """Open a chapter as `make present` serves it and wait until its widgets are on the page."""
    page.goto(chapter_url(voila["url"], path.name, voila["token"]), wait_until="load", timeout=300000)
    page.locator(".explainer-selfcheck").first.wait_for(timeout=120000)
    deadline = time.time() + 60
    while page.locator(".explainer-dashboard canvas").count() < _n_dashboards(path) and time.time() < deadline:
        time.sleep(0.3)
    time.sleep(1.0)


def _check_rendered_without_code(page, name: str, number: int) -> None:
    text = page.locator("body").inner_text()
    for bad in ("Traceback", "Error displaying widget", "There was an error when executing", "model not found"):
        assert bad not in text, f"{name}: '{bad}' shown"
    assert page.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0, f"{name}: a cell failed"
    assert page.locator(".jp-InputArea-editor, .cm-editor").count() == 0, f"{name}: code is shown"
    assert "SelfCheck(chapter=" not in text and "setup_notebook" not in text, f"{name}: code is shown"
    assert re.search(rf"Chapter {number} of \d+", text), f"{name}: no navigation line"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_in_voila(voila, browser, path):
    name = f"{path.name} (Voila)"
    with _page(browser, f"voila_{path.stem}") as page:
        _open_in_voila(page, voila, path)
        _check_rendered_without_code(page, name, int(path.name[:2]))
        _check_fit(page, name)
        _check_dashboards(page, name, _n_dashboards(path), f"voila_{path.stem}")
        _answer_selfcheck(page, name)
        _check_voila_links(page, voila, path)


def test_voila_next_link_opens_the_next_chapter(voila, browser):
    # Console errors are not checked here (they are on every chapter's own page): leaving a Voila page for the
    # next one logs a 403 for a request whose address the console message does not give.
    page = browser.new_page(viewport=VIEWPORT)
    with _closing(page, "voila_next"):
        page.goto(chapter_url(voila["url"], CHAPTERS[0].file, voila["token"]), wait_until="load", timeout=300000)
        page.locator("a", has_text="next:").first.click()
        page.wait_for_url(re.compile(re.escape(CHAPTERS[1].file) + "$"), timeout=60000)
        page.get_by_text(f"Chapter 1 of {CHAPTERS[-1].number}").first.wait_for(timeout=300000)
