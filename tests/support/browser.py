"""Headless Chromium for the web client's browser tests: Debian's
``/usr/bin/chromium`` (scripts/setup.sh installs it) driven by Playwright's
Python package. Playwright never downloads a browser here: the executable is
given, and a missing one skips with the reason (CI installs it)."""
from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import pytest

CHROMIUM = pathlib.Path(os.environ.get("BILDSLUSS_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """One browser per test worker (xdist runs workers in parallel)."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def thumbnails_decoded(page) -> list[int]:
    """naturalWidth of every thumbnail once loaded (0: broken)."""
    # Polled from here: wait_for_function would evaluate a string, which the
    # page's Content-Security-Policy (no unsafe-eval) rightly forbids.
    for _ in range(300):
        if page.eval_on_selector_all(".thumb img", "imgs => imgs.every(i => i.complete)"):
            break
        page.wait_for_timeout(100)
    return page.eval_on_selector_all(".thumb img", "imgs => imgs.map(i => i.naturalWidth)")
