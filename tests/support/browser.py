"""Real headless Chromium for tests: what a local HTML page logs to the console and asks the network for.

Console messages come from Chromium's own log (`--enable-logging=stderr`), which includes uncaught
errors and Content-Security-Policy violations. Network requests come from its NetLog: every request
whose isolation key is file:// was made by the page, not by the browser's background services.
Host names resolve nowhere, so a request is recorded but never leaves the machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import skip_or_fail

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"]


def chromium() -> str:
    """The chromium binary; skipped without one, except in CI, where a missing one is a setup bug."""
    found = shutil.which("chromium")
    if found:
        return found
    skip_or_fail("chromium is not on PATH; install it with .ci/install-chromium.sh (Debian, as root)")


@dataclass
class Page:
    dom: str
    console: list[str]
    requests: list[str]


def load(html_file: Path, workdir: Path) -> Page:
    """Opens `html_file` and returns its rendered DOM, console messages and network requests."""
    netlog = workdir / "netlog.json"
    result = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={workdir / 'profile'}", "--enable-logging=stderr",
         "--v=0", f"--log-net-log={netlog}", "--dump-dom", html_file.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return Page(result.stdout, console, _page_requests(netlog))


def screenshot(html_file: Path, png: Path, workdir: Path, width: int = 1280, height: int = 2000) -> None:
    subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={workdir / 'profile'}", f"--screenshot={png}",
         f"--window-size={width},{height}", html_file.resolve().as_uri()],
        capture_output=True, timeout=120, check=True)


def _page_requests(netlog: Path) -> list[str]:
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in log["events"]
            if event["type"] == start_job and "url" in event.get("params", {})
            and event["params"].get("network_isolation_key", "").startswith("file://")]
