"""`make lab` as a user runs it: JupyterLab starts (as root too), prints its URL instead of opening a
browser, and serves the executed reports.

In the slow tier: `make test-slow` installs the `lab` extra first (`make test` does not need it).
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode("utf-8", "replace")


def test_make_lab_serves_the_executed_reports(tmp_path):
    if not (REPO / ".venv" / "bin" / "jupyter-lab").exists():
        pytest.fail("JupyterLab is not installed: make test-slow installs the lab extra before the slow tier")
    reports = tmp_path / "reports"
    reports.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]),
                   reports / "04_policy_comparison.ipynb")
    port, token = free_port(), "remask-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    lab = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}", f"LAB_ROOT={reports}",
                            f"LAB_ARGS=--ServerApp.token={token}"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        deadline, status, page = time.monotonic() + 90, None, ""
        while time.monotonic() < deadline and lab.poll() is None:
            try:
                status, page = get(f"http://127.0.0.1:{port}/lab?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        assert lab.poll() is None, lab.stdout.read()[-3000:]  # as root too: make lab passes --allow-root
        assert status == 200 and "JupyterLab" in page
        _, listing = get(f"http://127.0.0.1:{port}/api/contents?token={token}")
        assert "04_policy_comparison.ipynb" in {item["name"] for item in json.loads(listing)["content"]}
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)
        output = lab.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/lab" in output  # the URL is printed: no browser is opened
