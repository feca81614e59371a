"""``cameo ui`` end to end in a real browser: upload photos -> train a few steps -> generate,
and a playable <video> appears. Headless Debian chromium driven by Playwright (no browser
download). A failure saves a screenshot and names it in the message."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow

STEP_TIMEOUT_MS = 120_000  # one stage (training, generation) on a busy 2-core machine


def _chromium() -> str:
    """Debian's chromium, or a clear failure under CI (a skip elsewhere)."""
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        msg = "the browser test needs Debian's chromium and playwright (make test installs both)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path, tiny_pipeline_dir):
    """The app on a free loopback port, serving from a thread of this process."""
    from cameo.ui.page import serve

    port = _free_port()
    demo, app = serve(tmp_path / "work", port=port, base=str(tiny_pipeline_dir), block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()
    app.queue.close()


@pytest.fixture
def browser(tmp_path):
    """A headless chromium page; on a failing test, a screenshot named in the message."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    artifacts = Path(os.environ.get("CAMEO_TEST_ARTIFACTS", tmp_path))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(30_000)
        outside: list[str] = []  # requests that left this machine (there should be none)
        pg.on(
            "request",
            lambda r: (
                outside.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                else None
            ),
        )
        yield SimpleNamespace(page=pg, outside=outside, screenshot=artifacts / "ui-failure.png")
        browser.close()


def _text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def _wait_for_status(page, selector: str, done: str, timeout_ms: int) -> str:
    """Wait until the status box starts with ``done``; an error there fails at once, and a
    timeout says what the box showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            """([sel, done]) => {
                const t = document.querySelector(sel)?.innerText.trim() || "";
                return t.startsWith(done) || t.startsWith("Error");
            }""",
            arg=[selector, done],
            timeout=timeout_ms,
        )
    except PlaywrightTimeout:
        shown = _text(page, selector).strip()
        raise AssertionError(
            f"{selector} did not say {done!r} within {timeout_ms / 1000:.0f} s; it says {shown!r}"
        ) from None
    text = _text(page, selector).strip()
    assert text.startswith(done), f"{selector} says: {text}"
    return text


def _flow(page, url: str, photos: list[Path]) -> dict:
    page.goto(url)
    _wait_for_status(page, "#photos-status", "No photos yet", 30_000)

    # Photos: upload the files as a user would, see the report.
    page.locator("#upload input[type=file]").set_input_files([str(p) for p in photos])
    _wait_for_status(page, "#photos-status", "6 usable", 30_000)
    assert "6 usable" in page.locator("#report textarea").input_value()

    # Train: a few tiny steps.
    page.get_by_role("tab", name="2. Train").click()
    page.locator("#rank").get_by_label("4", exact=True).check()
    page.locator("#steps input").fill("3")
    page.locator("#more-train").get_by_text("More settings").click()
    page.locator("#batch input").fill("2")
    page.locator("#preview-every input").fill("0")
    page.locator("#train").click()
    _wait_for_status(page, "#train-status", "Done", STEP_TIMEOUT_MS)
    assert "Identity score" in _text(page, "#identity")

    # Generate: the clip plays in the page.
    page.get_by_role("tab", name="3. Generate").click()
    page.locator("#prompt textarea").fill("mike, speaking, in front of a blue wall")
    page.locator("#generate").click()
    _wait_for_status(page, "#gen-status", "Done", STEP_TIMEOUT_MS)
    page.wait_for_function(
        """() => { const v = document.querySelector('#video video');
                   return v && v.src && (v.readyState >= 1 || v.duration > 0); }""",
        timeout=30_000,
    )
    return page.evaluate(
        """() => { const v = document.querySelector('#video video');
                   return {src: v.src, readyState: v.readyState, duration: v.duration,
                           error: v.error && v.error.code}; }"""
    )


def test_upload_train_generate_plays_a_video(served, browser, tmp_path):
    from cameo.data.world_folders import write_person_folder

    folder = write_person_folder(7, tmp_path / "my-photos", 6)
    photos = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".txt"))
    t0 = time.time()
    try:
        video = _flow(browser.page, served, photos)
    except Exception as e:  # assertion or Playwright timeout: keep what the page showed
        browser.page.screenshot(path=str(browser.screenshot), full_page=True)
        raise AssertionError(f"{e}\nscreenshot of the page: {browser.screenshot}") from e
    assert video["src"].endswith(".mp4") and video["error"] is None, video
    assert video["readyState"] >= 1 or video["duration"] > 0, video
    assert not browser.outside, f"the page fetched from outside this machine: {browser.outside}"
    print(f"upload -> train -> generate in the browser: {time.time() - t0:.0f} s")
