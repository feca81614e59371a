"""``cameo ui`` end to end in a real browser: upload photos -> train a few steps -> generate,
and a playable <video> appears; phone photos -> the photo check's thumbnails with their boxes
and warnings. Headless Debian chromium driven by Playwright (no browser download). A failure
saves a screenshot and names it in the message."""

from __future__ import annotations

import json
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


def wan_configs(folder: Path) -> Path:
    """A Wan 2.1 T2V 1.3B directory of config files only (480x832, 33 frames at 16 fps): the
    page and its photo check read a base's configs, never its weights."""
    configs = {
        "model_index.json": {
            "_class_name": "WanPipeline",
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLWan"],
        },
        "transformer/config.json": {
            "num_attention_heads": 12,
            "attention_head_dim": 128,
            "num_layers": 30,
            "in_channels": 16,
        },
        "vae/config.json": {"z_dim": 16},
        "scheduler/scheduler_config.json": {"flow_shift": 3.0},
    }
    for name, config in configs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(config))
    return folder


@pytest.fixture
def served_wan(tmp_path):
    """The app for a Wan 480p base (its configs only): the Photos tab and nothing heavier."""
    from cameo.ui.page import serve

    port = _free_port()
    base = wan_configs(tmp_path / "wan21")
    demo, app = serve(tmp_path / "work", port=port, base=str(base), block=False)
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
        yield SimpleNamespace(
            page=pg, outside=outside, screenshot=artifacts / "ui-failure.png", artifacts=artifacts
        )
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
    assert "6 of 6 files usable" in _text(page, "#photo-report .summary")
    assert page.locator("#photo-report .card img").count() == 6

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


def _photo_report(page, url: str, photos: list[Path]) -> dict:
    page.goto(url)
    _wait_for_status(page, "#photos-status", "No photos yet", 30_000)
    page.locator("#upload input[type=file]").set_input_files([str(p) for p in photos])
    _wait_for_status(page, "#photos-status", "4 usable", 60_000)
    page.wait_for_function(
        """() => { const imgs = [...document.querySelectorAll('#photo-report .card img')];
                   return imgs.length === 4 && imgs.every(i => i.complete && i.naturalWidth > 0); }""",
        timeout=30_000,
    )
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#photo-report .card')].map(
                 c => [c.dataset.file, {text: c.innerText, width: c.querySelector('img').naturalWidth,
                                        shown: c.querySelector('img').getBoundingClientRect().width}]))"""
    )


def test_phone_photos_show_as_thumbnails_with_boxes_and_warnings(served_wan, browser, tmp_path):
    """Four phone-like photos for a Wan 480p base: each card shows its thumbnail and warnings;
    the report area is saved as photos-report.png (the one in docs/)."""
    from test_ui import needs_faces, phone_like_folder

    if needs_faces.args[0]:
        pytest.skip(needs_faces.kwargs["reason"])
    folder = tmp_path / "phone"
    phone_like_folder(folder, small_face=True)
    (folder / "astronaut.txt").write_text("[trigger] smiling in front of a flag")
    (folder / "group.txt").write_text("[trigger] with friends at a party")
    (folder / "far-away.txt").write_text("[trigger], a woman with short blond hair, in a park")
    page = browser.page
    try:
        cards = _photo_report(page, served_wan, sorted(folder.iterdir()))
    except Exception as e:
        page.screenshot(path=str(browser.screenshot), full_page=True)
        raise AssertionError(f"{e}\nscreenshot of the page: {browser.screenshot}") from e
    assert sorted(cards) == ["astronaut.jpg", "blurred.jpg", "far-away.jpg", "group.jpg"]
    assert all(0 < c["width"] <= 256 and c["shown"] > 100 for c in cards.values()), cards
    assert "Several faces" in cards["group.jpg"]["text"]
    assert "the person is #" in cards["group.jpg"]["text"]
    assert "Blurry" in cards["blurred.jpg"]["text"]
    assert "No caption" in cards["blurred.jpg"]["text"]
    assert "Face too small" in cards["far-away.jpg"]["text"]
    assert "Caption describes the look" in cards["far-away.jpg"]["text"]
    summary = _text(page, "#photo-report .summary")
    assert "4 of 4 files usable" in summary and "832×480" in summary
    assert not browser.outside, f"the page fetched from outside this machine: {browser.outside}"
    from PIL import Image

    shot = browser.artifacts / "photos-report.png"
    page.locator("#photo-report").screenshot(path=str(shot))
    with Image.open(shot) as im:  # 256 colours: a third of the size, as docs/ keeps it
        small = im.convert("RGB").quantize(256)
    small.save(shot, optimize=True)
    print(f"the photo report: {shot}")
