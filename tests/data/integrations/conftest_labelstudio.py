"""A real Label Studio server for the integration tests (a pytest plugin that ``tests/conftest.py`` registers, so
every test module naming ``label_studio_server`` shares the one session server).

The server runs from its OWN virtual environment (its pins are not ours); we only talk to it with
``label-studio-sdk``. The binary: ``$VIRL_LABEL_STUDIO``, else ``<repo>/.venv-labelstudio/bin/label-studio`` (what
``scripts/install.sh`` creates), else ``label-studio`` on PATH; without one the tests skip with that reason.

The session fixture starts it once on 127.0.0.1 at a free port with a temporary data dir, an admin user with a
40-hex legacy token, and local-files serving rooted at a temporary document root; it polls ``/health`` (first start
~30 s for migrations, at most ``STARTUP_S``), yields ``LabelStudioServer(url, token, root)`` and terminates the
server's process group at the end. On Linux the server also gets SIGTERM when the test process dies
(``PR_SET_PDEATHSIG``), so a killed test run leaves no server behind either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[3]
STARTUP_S = 180.0
USER = "virl-admin@example.com"


class LabelStudioServer(NamedTuple):
    url: str
    token: str
    root: Path  # LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: put test images under it


def label_studio_binary() -> tuple[str | None, str]:
    """``(binary, where it came from)``: ``$VIRL_LABEL_STUDIO`` (when set, only it), else the repo's
    ``.venv-labelstudio``, else ``label-studio`` on PATH; ``(None, why not)`` when there is none."""
    env = os.environ.get("VIRL_LABEL_STUDIO")
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return env, "VIRL_LABEL_STUDIO"
        return None, f"VIRL_LABEL_STUDIO={env} is not an executable file"
    venv = REPO / ".venv-labelstudio" / "bin" / "label-studio"
    if venv.is_file():
        return str(venv), ".venv-labelstudio"
    on_path = shutil.which("label-studio")
    if on_path:
        return on_path, "PATH"
    return None, (
        "no Label Studio server binary: set VIRL_LABEL_STUDIO, or create .venv-labelstudio with "
        "label-studio==1.23.2 (bash scripts/install.sh does), or put label-studio on PATH"
    )


def _die_with_parent() -> None:
    """Runs in the server process before exec: SIGTERM it when the process that started it dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _server_env(data: Path, root: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABEL_STUDIO_")}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data),
        LABEL_STUDIO_USERNAME=USER,
        LABEL_STUDIO_PASSWORD=secrets.token_hex(12),
        LABEL_STUDIO_USER_TOKEN=token,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root),
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
    )
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)  # the server's own process group (start_new_session): it and its children
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def label_studio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    binary, why = label_studio_binary()
    if binary is None:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("label-studio")
    data, root = base / "data", (base / "files").resolve()
    data.mkdir()
    root.mkdir()
    token, port = secrets.token_hex(20), _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(base / "server.log", "wb")
    cmd = [binary, "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, env=_server_env(data, root, token), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        deadline = time.monotonic() + STARTUP_S
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (base / "server.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"Label Studio ({why}) did not come up at {url} (exit {proc.poll()}); log tail:\n{tail}")
            time.sleep(0.5)
        yield LabelStudioServer(url, token, root)
    finally:
        _stop(proc)
        log.close()
