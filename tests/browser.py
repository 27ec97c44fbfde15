"""Headless Chromium (Debian's ``chromium``, installed by .ci/install) for page tests.

Each call starts its own browser with its own profile folder and waits for it to exit,
so nothing is left running and nothing is shared with other users of the machine.
Console messages (JavaScript errors, Content-Security-Policy refusals) reach stderr
through ``--enable-logging=stderr``; :func:`console_messages` picks them out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest

_CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]?\s*(.*)")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed: run .ci/install (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(page: str, *flags: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Open the local file ``page`` headless with ``flags``; stdout/stderr captured."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--hide-scrollbars",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
            *flags, "file://" + os.path.abspath(page),
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)


def console_messages(stderr: str) -> list[str]:
    """Every console message the page produced (a clean page produces none)."""
    return [match.group(1) for match in map(_CONSOLE.search, stderr.splitlines()) if match]


def dump_dom(page: str) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and its console messages."""
    result = run_chromium(page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, console_messages(result.stderr)


def screenshot(page: str, png: str, width: int = 1280, height: int = 6000) -> list[str]:
    """Render ``page`` to ``png``; returns the console messages."""
    result = run_chromium(page, f"--screenshot={png}", f"--window-size={width},{height}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(png), result.stderr[-2000:]
    return console_messages(result.stderr)


class Elements(HTMLParser):
    """Every element of a page: ``(tag, attributes)`` in order, and the text."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.texts: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.texts.append(data)

    def figures(self) -> dict[str, str]:
        return {attrs["data-figure"]: attrs.get("data-value", "")
                for _, attrs in self.elements if "data-figure" in attrs}

    def tags(self, name: str) -> list[dict]:
        return [attrs for tag, attrs in self.elements if tag == name]

    @property
    def text(self) -> str:
        return "".join(self.texts)
