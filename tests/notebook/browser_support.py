"""A throwaway JupyterLab server for the real-browser test: isolated settings, loopback only, always stopped.

The server is started *detached* (its launcher exits at once, so the server is re-parented away from pytest).
That matters: notebooks decide whether they are in a live frontend by looking for batch runners (papermill,
pytest, nbconvert) among the kernel's ancestors (`yourai.notebook.display.is_interactive_session`). A person
starts `jupyter lab` from a shell; the test must look the same, so no ancestor and no command line of the
server may mention pytest. For the same reason every path (which lies under pytest's tmp dir) reaches the
server through environment variables and a config file, never through its argv.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

CHROMIUM_PATH = Path("/usr/bin/chromium")  # Debian's package; Playwright must never download a browser
CHROMIUM_ARGS = [  # headless, no sandbox (root in CI), nothing that phones home
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_TIMEOUT_S = 90.0  # a cold start imports jupyter_server + lab extensions on 2 cores
SERVER_STOP_TIMEOUT_S = 20.0   # graceful shutdown (kernels included) before SIGTERM, then SIGKILL
POLL_INTERVAL_S = 0.25

# Launcher run as `python -c`: starts the server in its own session and prints its pid, then exits.
_LAUNCHER = (
    "import subprocess, sys\n"
    "log = open(sys.argv[1], 'ab')\n"
    "server = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,"
    " start_new_session=True)\n"
    "print(server.pid, flush=True)\n"
)

# User settings: no news/update toasts over the UI, and every cell kept in the DOM (no windowing), so
# selectors see the whole notebook and the screenshot is not covered.
LAB_USER_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_loopback_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (the server is told not to retry others)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_lab_config(base_dir: Path, port: int) -> dict[str, str]:
    """Config, data, runtime and settings dirs under base_dir; returns the environment that points at them."""
    dirs = {name: base_dir / name for name in ("config", "data", "runtime", "settings", "workspaces", "ipython")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    for relative, values in LAB_USER_SETTINGS.items():
        settings_file = dirs["settings"] / relative
        settings_file.parent.mkdir(parents=True, exist_ok=True)
        settings_file.write_text(json.dumps(values))
    config = {
        "ServerApp": {
            "ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False, "allow_root": True,
            "token": "", "password": "", "disable_check_xsrf": True,
        },
        "IdentityProvider": {"token": ""},
        "LabApp": {
            "expose_app_in_browser": True, "news_url": None,
            "user_settings_dir": str(dirs["settings"]), "workspaces_dir": str(dirs["workspaces"]),
        },
    }
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(config, indent=1))
    return {
        "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "IPYTHONDIR": str(dirs["ipython"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]), "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
    }


@dataclass
class LabServer:
    """A running JupyterLab: its URL, its pid (not our child: see the module docstring) and its log."""

    url: str
    pid: int
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as error:
            return f"<no server log: {error}>"

    def stop(self) -> None:
        """Ask the server to shut down (it stops its kernels), then signal whatever is left of its tree."""
        tree = _process_tree(self.pid)
        try:
            request = urllib.request.Request(f"{self.url}/api/shutdown", method="POST", data=b"")
            urllib.request.urlopen(request, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass  # already gone or not answering: the signals below still apply
        _, alive = psutil.wait_procs(tree, timeout=SERVER_STOP_TIMEOUT_S)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in alive:
                try:
                    process.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(alive, timeout=SERVER_STOP_TIMEOUT_S / 4)
        if alive:
            raise RuntimeError(f"JupyterLab processes survived SIGKILL: {[p.pid for p in alive]}")


def _process_tree(pid: int) -> list[psutil.Process]:
    """The server and its descendants (kernels run in their own sessions, so a process group would miss them)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def start_lab(root_dir: Path, base_dir: Path) -> LabServer:
    """Start `jupyter lab` detached on a free loopback port, serving root_dir; wait until it answers."""
    port = free_loopback_port()
    env = {**os.environ, **write_lab_config(base_dir, port), "PYTHONUNBUFFERED": "1"}
    log_path = base_dir / "jupyterlab.log"
    command = [sys.executable, "-m", "jupyterlab"]  # no paths in argv: they would show up in ps
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(log_path), *command],
        cwd=root_dir, env=env, capture_output=True, text=True, timeout=30, check=True,
    )
    server = LabServer(url=f"http://127.0.0.1:{port}", pid=int(launcher.stdout.strip()), log_path=log_path)
    try:
        _wait_until_answering(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_until_answering(server: LabServer) -> None:
    """Poll /api/status until 200, failing early (with the log) if the server died."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE:
            raise RuntimeError(f"JupyterLab exited during start-up; log:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/api/status", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S:.0f} s; log:\n{server.log_tail()}")
