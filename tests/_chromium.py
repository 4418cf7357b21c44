"""A real headless Chromium, driven over the DevTools protocol on a pipe.

Just enough of the protocol for page tests: open a ``file://`` page, wait for
its ``load``, evaluate JavaScript (promises awaited), take a screenshot. The
browser talks on file descriptors 3 (commands in) and 4 (answers out),
``--remote-debugging-pipe``; messages are JSON ended by a NUL byte. No port,
no extra package: Debian's ``chromium`` is enough.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["Browser", "BrowserUnavailable", "Page"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
#: Seconds any one protocol answer may take (a loaded 2-core machine, a cold start).
TIMEOUT = 60.0


class BrowserUnavailable(RuntimeError):
    """No Chromium on PATH, or it would not start: tests skip saying which."""


class Browser:
    """One headless Chromium process; a context manager that always ends it."""

    def __init__(self) -> None:
        binary = next((b for b in map(shutil.which, CANDIDATES) if b), None)
        if binary is None:
            raise BrowserUnavailable(f"no Chromium on PATH (looked for {', '.join(CANDIDATES)})")
        self._profile = tempfile.TemporaryDirectory(prefix="gallery-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",  # root in a container has no user namespace to sandbox with
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            f"--user-data-dir={self._profile.name}",
            "about:blank",
        ]
        # The protocol wants fds 3 and 4 exactly: bash moves the pipe ends there (dash
        # cannot redirect from a descriptor above 9).
        script = f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}'
        try:
            self._proc = subprocess.Popen(
                ["bash", "-c", script, "bash", *args],
                pass_fds=(to_browser_r, from_browser_w),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BrowserUnavailable(f"{binary} would not start: {exc}") from None
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        try:
            self.version = self.call("Browser.getVersion", timeout=30)["product"]
        except (BrowserUnavailable, OSError) as exc:
            stderr = self._stop()
            raise BrowserUnavailable(f"{binary} did not answer: {exc}; stderr: {stderr}") from None

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> str:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        stderr = (
            self._proc.stderr.read().decode(errors="replace")[-500:] if self._proc.stderr else ""
        )
        if self._proc.stderr:
            self._proc.stderr.close()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._profile.cleanup()
        return stderr

    # -- the protocol ---------------------------------------------------------------------------

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserUnavailable("no answer from the browser in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserUnavailable("the browser closed its pipe")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        decoded: dict[str, Any] = json.loads(message)
        return decoded

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = TIMEOUT,
    ) -> dict[str, Any]:
        """Send one command; return its ``result`` (raises ``RuntimeError`` on a protocol error)."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") != ident:
                self._events.append(answer)
                continue
            if "error" in answer:
                raise RuntimeError(f"{method}: {answer['error']}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def wait_event(self, method: str, *, session: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next event ``method`` of ``session`` (events that came earlier count)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    params: dict[str, Any] = event.get("params", {})
                    return params
            self._events.append(self._read(deadline))

    def open(self, url: str, *, width: int = 1280, height: int = 900) -> Page:
        """A new tab showing ``url`` once its ``load`` event fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        page.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", session=session)
        return page


class Page:
    """One tab of a :class:`Browser`."""

    def __init__(self, browser: Browser, session: str) -> None:
        self._browser = browser
        self._session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._browser.call(method, params, session=self._session)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (a promise is awaited)."""
        answer = self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"the page threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save what the viewport shows as a PNG at ``path``."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path
