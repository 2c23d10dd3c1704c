"""Headless Chromium driven over the DevTools protocol: open a page, record every request it makes, screenshot it.

The browser runs with ``--host-resolver-rules`` that resolve no host but 127.0.0.1, so a page
that needs the internet cannot load it; the requests are recorded anyway (``Network`` events),
so a test can say which ones the page tried.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

#: Chromium's own background traffic (updates, sync, first-run pages) is switched off.
QUIET = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--remote-allow-origins=*",
]
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


@dataclass
class Page:
    """One browser tab: what it requested, what failed, and a way to run JavaScript in it."""

    socket: Any
    requested: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    _next_id: int = 0
    _urls: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result, recording the events that arrive meanwhile."""
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            self._urls[params["requestId"]] = params["request"]["url"]
            self.requested.append(params["request"]["url"])
        elif message.get("method") == "Network.loadingFailed":
            self.failed.append(f"{self._urls.get(params['requestId'], '?')}: {params.get('errorText')}")

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"never true in the page: {expression}")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


class Browser:
    """A headless Chromium with its own profile under ``home``, reachable over DevTools."""

    def __init__(self, binary: str, home: Path, width: int = 1280, height: int = 1400) -> None:
        profile = home / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self._log = (home / "chromium.log").open("w")
        self.process = subprocess.Popen(
            [binary, *QUIET, OFFLINE, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {(home / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.devtools = f"http://127.0.0.1:{port_file.read_text().split()[0]}"

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[Page]:
        """A new tab recording its network requests, navigated to ``url``."""
        target = httpx.put(f"{self.devtools}/json/new?about:blank", timeout=10).json()
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
            page = Page(socket)
            page.call("Network.enable")
            page.call("Page.enable")
            page.call("Page.navigate", url=url)
            yield page

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
