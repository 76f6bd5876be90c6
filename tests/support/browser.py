"""Headless Chromium driven over the DevTools protocol (websocket-client), for UI tests.

Uses the system browser (/usr/bin/chromium, Debian package `chromium`); nothing is downloaded.
One Browser is one Chromium process with a fresh profile and one page.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM = os.environ.get("RUNBOOK_CHROMIUM", "/usr/bin/chromium")


class BrowserError(RuntimeError):
    pass


class Browser:
    """with Browser(1400, 900) as b: b.open(url); b.wait_for("js expression"); b.screenshot(p)"""

    def __init__(self, width: int = 1400, height: int = 900, timeout: float = 30.0) -> None:
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._profile = Path(tempfile.mkdtemp(prefix="runbook-chromium-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._ws: websocket.WebSocket | None = None

    def __enter__(self) -> Browser:
        if not os.access(CHROMIUM, os.X_OK):
            raise BrowserError(
                f"no Chromium at {CHROMIUM}: install the Debian package `chromium` "
                "(apt-get install chromium) or set RUNBOOK_CHROMIUM"
            )
        self._process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: its helpers stop with it
        )
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            self._ws = websocket.create_connection(
                pages[0]["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
            )
            self.send("Page.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._process is not None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass

    def _devtools_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrowserError(f"{CHROMIUM} exited with {self._process.returncode}")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise BrowserError(f"{CHROMIUM} did not open its DevTools port in {self.timeout}s")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; returns its result (events arriving meanwhile are dropped)."""
        assert self._ws is not None
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") != call_id:
                continue
            if "error" in message:
                raise BrowserError(f"{method}: {message['error']}")
            return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate and wait until the new document has loaded (the app renders later and may
        add a query string: V2's artifact page adds ?tab=Artifact)."""
        self.send("Page.navigate", url=url)
        loaded = f"location.href.startsWith({json.dumps(url)}) && document.readyState"
        self.wait_for(f"{loaded} === 'complete'")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None  # the page is navigating
            if value:
                return value
            time.sleep(0.2)
        raise BrowserError(f"timed out waiting for {expression!r} (last value {value!r})")

    def click(self, text: str, selector: str = "button, a, [role=menuitem], [role=tab]") -> None:
        """Click, as a mouse does (move, press, release at its centre), the first visible
        element matching `selector` whose text is `text`, once it is there. A real press
        matters: the UI's menus open on pointerdown, not on a scripted click()."""
        find = f"""(() => {{
          const el = [...document.querySelectorAll({json.dumps(selector)})]
            .find(e => e.innerText.trim() === {json.dumps(text)} && e.offsetParent !== null);
          if (!el) return null;
          el.scrollIntoView({{block: 'center'}});
          const r = el.getBoundingClientRect();
          return JSON.stringify([r.x + r.width / 2, r.y + r.height / 2]);
        }})()"""
        x, y = json.loads(self.wait_for(find))
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def text(self) -> str:
        """What the page shows: the rendered text of its body."""
        return self.evaluate("document.body.innerText") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path
