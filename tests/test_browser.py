"""Every notebook in a real JupyterLab driven by a real Chromium.

For each notebook: open it, "Run All Cells", assert that no cell shows an error and that every widget
rendered (a version mismatch between ipywidgets/ipympl and JupyterLab shows up here and nowhere else),
then move the primary control of each dashboard and assert that both its figure and its read-out
changed. A screenshot per notebook goes to build/screenshots/.

Needs Debian's Chromium (``apt-get install -y chromium``) and Playwright's Python package; the
browser is never downloaded. Outside CI the test is skipped when Chromium is missing; with CI=true it
must run.
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
from pathlib import Path

import pytest

from tools.notebooks import NOTEBOOK_DIR, ROOT

pytestmark = [pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
#: Console errors the page may log without anything being wrong, as (pattern, why it is harmless). Empty: with
#: the pinned JupyterLab, ipywidgets and ipympl, running every chapter logs no error at all; add an entry only with
#: the reason it is harmless.
HARMLESS_CONSOLE_ERRORS: list = []


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free loopback port, serving a scratch copy of the notebooks."""
    _need_browser()
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
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
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("JupyterLab did not start: " + (base / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    yield {"url": url, "token": token, "root": root, "log": base / "lab.log"}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_in_jupyterlab(lab, browser, path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    try:
        page.goto(f"{lab['url']}/lab/workspaces/{path.stem}/tree/{path.name}?reset&token={lab['token']}", wait_until="domcontentloaded", timeout=60000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60000)
        _accept_kernel_dialog(page)
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=60000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator("li[data-command='runmenu:run-all']").click()
        time.sleep(1.0)
        _wait_idle(page, timeout_s=180)
        # let widget views render (ipywidgets renders views asynchronously after the kernel is idle)
        if "Dashboard(" in path.read_text():
            try:
                page.locator(".explainer-dashboard").first.wait_for(timeout=30000)
            except Exception:
                pass  # reported by the assertion below
        time.sleep(1.5)
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, f"{path.name}: cell error: {errors.first.inner_text()[:1500]}"
        text = page.locator(".jp-Notebook").inner_text()
        for bad in ("Error displaying widget", "model not found", "not registered", "Traceback (most recent call last)"):
            assert bad not in text, f"{path.name}: '{bad}' shown in the notebook"
        n_code = page.locator(".jp-CodeCell").count()
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        n_done = sum(1 for t in prompts if re.match(r"^\s*\[\d+\]", t))
        assert n_code and n_done == n_code, f"{path.name}: {n_done} of {n_code} code cells ran"

        dashboards = page.locator(".explainer-dashboard")
        n = dashboards.count()
        if "Dashboard(" in path.read_text():
            assert n >= 1, f"{path.name}: its dashboards did not render"
        for i in range(n):
            dash = dashboards.nth(i)
            dash.scroll_into_view_if_needed()
            assert dash.locator("canvas").count() >= 1, f"{path.name}: dashboard {i} has no interactive canvas (ipympl)"
            readout = dash.locator(".explainer-readout")
            container = dash.locator(".jupyter-matplotlib-canvas-container")
            figure = container.first if container.count() else dash.locator("canvas").first
            before_text = readout.inner_text()
            before_img = figure.screenshot()
            did = _move(dash.locator(".explainer-primary").first, page)
            deadline = time.time() + 15
            while time.time() < deadline:
                time.sleep(0.3)
                after_text = readout.inner_text()
                if after_text != before_text and figure.screenshot() != before_img:
                    break
            else:
                raise AssertionError(
                    f"{path.name}: dashboard {i}: after '{did}' the "
                    + ("read-out" if readout.inner_text() == before_text else "figure") + " did not change")
            assert "\u26a0" not in after_text, f"{path.name}: dashboard {i} shows a message: {after_text}"
            dash.screenshot(path=str(SHOTS / f"{path.stem}__dashboard{i}.png"))
        page.screenshot(path=str(SHOTS / f"{path.stem}.png"), full_page=True)
        unexplained = [m for m in console_errors if not any(re.search(pat, m) for pat, _ in HARMLESS_CONSOLE_ERRORS)]
        assert not unexplained, f"{path.name}: the page logged errors: {unexplained[:5]}"
    except BaseException:
        page.screenshot(path=str(SHOTS / f"{path.stem}__FAILED.png"), full_page=True)
        raise
    finally:
        page.close()
