"""`make present`: the course as a presentation, served by Voila: code hidden, widgets live, one chapter per page.

Voila serves the repository's root, so a chapter is at ``/voila/render/notebooks/NN_topic.ipynb`` and the
chapters' relative links (``03_anchors.ipynb``) lead from one chapter to the next exactly as in JupyterLab. Links
to ``../docs/*.md`` and to the cheat sheet in ``build/`` are served as files (allowed below). Each page runs its
chapter in a fresh kernel when it opens. The server listens on 127.0.0.1 only and asks for a token; the URL printed
carries it, and the browser keeps it in a cookie for the links that follow. The token reaches Voila through its
environment (``JUPYTER_TOKEN``, readable only by the same user), never on its command line, which any local user
can read in ``/proc/<pid>/cmdline``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, List, Optional, Sequence

from tools.notebooks import ROOT

__all__ = ["FILE_ALLOWLIST", "voila_command", "voila_env", "chapter_url", "stop_server", "main"]

#: Files Voila may serve besides the notebooks: images, the docs and the cheat sheet.
FILE_ALLOWLIST = [r".*\.(png|jpg|gif|svg)", r"docs/[^/]+\.md", r"build/cheatsheet\.(html|pdf)"]


#: Where the course's Voila template ("course": the lab template, offline) lives, as a Jupyter data directory.
TEMPLATES = Path(__file__).resolve().parent


def voila_command(port: int, root: Path = ROOT, python: str = sys.executable) -> List[str]:
    """The Voila command line: serve ``root`` on 127.0.0.1:``port``, sources stripped, no browser, a token required.

    Run it with :func:`voila_env`, which makes the course's template findable and gives the token.
    """
    allow = "[" + ", ".join(repr(p) for p in FILE_ALLOWLIST) + "]"
    return [python, "-m", "voila", str(root), "--no-browser", "--Voila.ip=127.0.0.1", f"--Voila.port={port}",
            "--Voila.port_retries=0", "--Voila.auto_token=True", "--strip_sources=True", "--template=course",
            "--VoilaConfiguration.show_tracebacks=False", f"--VoilaConfiguration.file_allowlist={allow}"]


def voila_env(base: Optional[dict] = None, token: Optional[str] = None) -> dict:
    """The environment for :func:`voila_command`: the course's template on JUPYTER_PATH, no forced plot backend,
    and the token the server requires (``JUPYTER_TOKEN``; without one, Voila makes one up)."""
    env = dict(os.environ if base is None else base)
    env.pop("JUPYTER_TOKEN_FILE", None)
    if token is not None:
        env["JUPYTER_TOKEN"] = token
    env["JUPYTER_PATH"] = os.pathsep.join([str(TEMPLATES)] + [p for p in [env.get("JUPYTER_PATH")] if p])
    env.pop("MPLBACKEND", None)  # the notebooks choose ipympl's backend themselves
    return env


def chapter_url(base: str, notebook: str, token: str = "") -> str:
    """Where Voila renders ``notebook`` (a file name in notebooks/)."""
    return f"{base}/voila/render/notebooks/{notebook}" + (f"?token={token}" if token else "")


def stop_server(proc: "subprocess.Popen[Any]", log: Optional[IO[Any]] = None) -> None:
    """Stop a server started from :func:`voila_command` (SIGTERM, then SIGKILL after 20 s) and close its log."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    if log is not None:
        log.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("PRESENT_PORT", "8866")))
    args = ap.parse_args(argv)
    token = secrets.token_hex(16)
    url = chapter_url(f"http://127.0.0.1:{args.port}", "00_start_here.ipynb", token)
    print(f"Presenting the course at\n\n    {url}\n\nOpen it in a browser (the links lead from chapter to chapter). "
          "Ctrl-C stops the server.", flush=True)
    try:
        return subprocess.call(voila_command(args.port), env=voila_env(token=token), cwd=ROOT)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
