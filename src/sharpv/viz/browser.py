"""Driving a headless Chromium through its DevTools protocol, over a pipe (no network port, no
package beyond the standard library): what the tests use to press keys on ``sharpv viz``'s page,
and what made the page's screenshots in the docs::

    python -m sharpv.viz.browser screenshot runs/viz/index.html page.png --width 1400 [--colours 256]

Needs a Chromium binary (Debian: ``apt-get install chromium``; or ``--chromium /path/to/it``);
:func:`find_chromium` says whether there is one. Not used by the library itself."""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: the flags every launch uses: headless, no sandbox (containers), and nothing that reaches the network
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio",
    "--disable-default-apps", "--disable-extensions", "--remote-debugging-pipe",
)
#: (key, code, Windows virtual key code) for the keys the tests press
KEYS = {"ArrowRight": ("ArrowRight", 39), "ArrowLeft": ("ArrowLeft", 37), "ArrowUp": ("ArrowUp", 38),
        "ArrowDown": ("ArrowDown", 40), "Home": ("Home", 36), "End": ("End", 35)}


def find_chromium(explicit: str | None = None) -> str | None:
    """A Chromium (or Chrome) binary: ``explicit`` if given, else the first of chromium,
    chromium-browser, google-chrome, google-chrome-stable on PATH; None when there is none."""
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless Chromium with one page, driven over ``--remote-debugging-pipe``.

    ``with Chromium(width=1400) as browser: browser.goto(path); browser.evaluate("1 + 1")``.
    ``errors`` collects the page's uncaught exceptions and console errors."""

    def __init__(self, width: int = 1400, height: int = 900, binary: str | None = None, timeout: float = 60.0):
        self.width, self.height, self.timeout = width, height, timeout
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise BrowserError("no Chromium found (install chromium, or pass its path)")
        self.errors: list[str] = []
        self._events: list[dict] = []
        self._buffer = b""
        self._id = 0
        self.session: str | None = None

    # --- the process and the pipe ----------------------------------------------------------------
    def __enter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="sharpv-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def plumb() -> None:  # in the child: the pipe's ends become fds 3 (commands) and 4 (replies)
            # moved above 10 first: either end may itself be fd 3 or 4, and dup2 onto itself would
            # leave it close-on-exec
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.process = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self._profile.name}", f"--window-size={self.width},{self.height}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=plumb, close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.resize(self.width, self.height)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.send("Browser.close", session=False, wait=False)
                    self.process.wait(timeout=10)
                except (BrowserError, OSError, subprocess.TimeoutExpired):
                    self.process.kill()
                    self.process.wait(timeout=10)
        finally:
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._profile.cleanup()

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise BrowserError("Chromium closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _note(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(params["entry"].get("text", ""))
        self._events.append(message)

    def send(self, method: str, params: dict | None = None, session: bool = True, wait: bool = True) -> dict:
        """Send one DevTools command (to the page's session unless ``session`` is False) and return
        its result; an error reply raises :class:`BrowserError`."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        if not wait:
            return {}
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self._note(reply)

    def wait_for(self, event: str, timeout: float | None = None) -> dict:
        """The next (or an already received) event named ``event``."""
        for k, message in enumerate(self._events):
            if message.get("method") == event:
                return self._events.pop(k)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            message = self._read_message(deadline)
            self._note(message)
            if message.get("method") == event:
                self._events.remove(message)
                return message

    # --- the page -------------------------------------------------------------------------------
    def resize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False})

    def goto(self, path_or_url: str | Path) -> None:
        """Open a file (a path) or URL and wait until it has loaded."""
        url = str(path_or_url)
        if "://" not in url:
            url = Path(url).resolve().as_uri()
        self._events = [m for m in self._events if m.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def press(self, key: str) -> None:
        """Press and release a key as a user does (the focused element gets it, with its default action)."""
        code, vk = KEYS[key]
        base = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.send("Input.dispatchKeyEvent", {"type": "rawKeyDown", **base})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **base})

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates (x, y) of the viewport."""
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        """A PNG of the page at the current width: the whole page (``full_page``) or the viewport."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": self.width, "height": height, "scale": 1})
        data = self.send("Page.captureScreenshot", params)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path


def reduce_colours(path: str | Path, colours: int) -> Path:
    """Rewrite the PNG at ``path`` with a palette of at most ``colours`` colours (no dithering)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.FASTOCTREE,
                                                dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    return Path(path)


class _OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one ``error:`` line and exit code 2, as sharpv's commands do."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m sharpv.viz.browser", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    shot = sub.add_parser("screenshot", help="a full-page PNG of a page at a window width")
    shot.add_argument("page", type=Path)
    shot.add_argument("out", type=Path)
    shot.add_argument("--width", type=int, default=1400)
    shot.add_argument("--height", type=int, default=900, help="viewport height (the whole page is captured)")
    shot.add_argument("--colours", type=int, default=0,
                      help="write the PNG with at most this many colours (2-256; smaller files for docs); 0: all")
    shot.add_argument("--chromium", default=None, help="the Chromium binary (default: the first on PATH)")
    args = parser.parse_args(argv)
    if not args.page.is_file():
        print(f"error: {args.page} is not a file", file=sys.stderr)
        return 2
    if args.colours and not 2 <= args.colours <= 256:
        print(f"error: --colours must be 0 or from 2 to 256, got {args.colours}", file=sys.stderr)
        return 2
    binary = find_chromium(args.chromium)
    if binary is None:
        print("error: no Chromium found (install chromium, or pass --chromium PATH)", file=sys.stderr)
        return 2
    with Chromium(width=args.width, height=args.height, binary=binary) as browser:
        browser.goto(args.page)
        browser.screenshot(args.out)
        if args.colours:
            reduce_colours(args.out, args.colours)
        if browser.errors:
            print("error: the page reported: " + "; ".join(browser.errors), file=sys.stderr)
            return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
