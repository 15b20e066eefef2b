"""The web UI and the speech page in a real browser: headless Chromium (Debian `chromium` and
`chromium-driver`, installed by `scripts/bootstrap --test`) driven by Selenium loads `/` and `/speech`
from the host build with a tiny CustomVoice model, speaks a sentence and checks that audio arrived and
played, with no console errors and no request leaving the server. A screenshot of each page is kept
in the test's tmp dir (Q3BUILD_UPDATE_SCREENSHOTS=1 also copies them to docs/ui/)."""

from __future__ import annotations

import os
import re
import shutil
import time

import numpy as np
import pytest
import requests
import soundfile as sf

from ..conftest import REPO
from .conftest import speech_server

pytestmark = pytest.mark.slow

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in q3build's test extra")

SCREENSHOTS = REPO / "docs" / "ui"
UPDATE = os.environ.get("Q3BUILD_UPDATE_SCREENSHOTS") == "1"
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def server(built):
    # a short cap keeps the tiny random model's audio to about two seconds
    with speech_server(built, "browser", "custom_voice", "--tts-max-frames", "24") as s:
        yield s


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium and chromedriver are needed (scripts/bootstrap --test installs the Debian packages "
                    "chromium and chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
              "--autoplay-policy=no-user-gesture-required", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--disable-default-apps",
              f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingOptions", {"browser": "ALL"})
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    # the driver and the browser are given: Selenium Manager stays offline and downloads nothing
    os.environ.setdefault("SE_OFFLINE", "true")
    d = webdriver.Chrome(options=opts, service=Service(executable_path=driver, log_output=str(log)))
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()


def _wait(d, script: str, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = d.execute_script(script)
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; page state: "
                         f"{d.execute_script('return window.q3speech && window.q3speech.state')}")


def _console_errors(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]


def _foreign_requests(d, base: str) -> list[str]:
    names = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not n.startswith((base + "/", "blob:", "data:"))]


def _screenshot(d, tmp_path, name: str):
    out = tmp_path / name
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1280, max(900, height + 200))   # the whole page
    time.sleep(0.3)
    d.save_screenshot(str(out))
    d.set_window_size(1280, 900)
    assert out.stat().st_size > 10_000, f"{name}: a blank screenshot?"
    if UPDATE:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, SCREENSHOTS / name)
    return out


def test_index_serves_the_web_ui_with_a_link_to_the_speech_page(server, browser, tmp_path, host_work):
    build_info = (host_work / "stage" / "host" / "share" / "q3build" / "build-info.json").read_text()
    assert '"embedded": true' in build_info, "the host build embedded no web UI"
    browser.get(server.base + "/")
    _wait(browser, "return document.querySelector('a[href=\"./speech\"]') !== null", 30, "the speech link")
    # the Svelte app rendered (the chat input of upstream's UI)
    _wait(browser, "return document.querySelector('textarea') !== null", 60, "upstream's UI to render")
    time.sleep(1.0)
    _screenshot(browser, tmp_path, "index.png")
    assert _foreign_requests(browser, server.base) == []
    # upstream's UI asks for /tools, which upstream's server refuses (403) unless tools are enabled: theirs
    errors = [e for e in _console_errors(browser) if not re.search(r"/tools - Failed to load resource: .* 403", e)]
    assert errors == []
    browser.find_element("css selector", 'a[href="./speech"]').click()
    _wait(browser, "return location.pathname === '/speech' && window.q3speech && window.q3speech.state.voicesLoaded",
          30, "the speech page after the link")


def test_speech_page_speaks_and_plays(server, browser, tmp_path):
    browser.get(server.base + "/speech")
    browser.get_log("browser")   # start the console check here
    _wait(browser, "return window.q3speech && window.q3speech.state.voicesLoaded", 30, "the voices")
    voices = requests.get(server.base + "/v1/audio/voices", timeout=10).json()
    offered = browser.execute_script("return [...document.querySelectorAll('#voice option')].map(o => o.value)")
    assert offered == [""] + [v["id"] for v in voices["voices"]]
    text = browser.find_element("id", "input")
    text.clear()
    text.send_keys(SENTENCE)
    browser.find_element("id", "speak").click()
    state = _wait(browser, "const s = window.q3speech.state; return (s.done || s.error) ? s : null", 180,
                  "the stream to finish")
    assert state["error"] is None
    assert state["chunks"] >= 1 and state["samples"] > 0 and state["ttfaMs"] > 0
    duration = state["samples"] / 24000
    assert abs(state["scheduledSeconds"] - duration) < 1e-3
    # every scheduled chunk played to its end in the page's AudioContext
    _wait(browser, f"return window.q3speech.state.playedSeconds >= {duration - 1e-3}", duration + 30, "playback")
    done = state["done"]
    assert done["type"] == "speech.audio.done" and done["audio_seconds"] > 0
    assert browser.find_element("id", "rtf").text == f"{done['real_time_factor']:.3f}"
    assert browser.find_element("id", "ttfa").text.endswith(" ms")
    stages = browser.execute_script("return [...document.querySelectorAll('#stages th')].map(t => t.textContent)")
    order = ["prompt", "talker", "code_predictor", "codec_decode"]
    assert stages == [k.replace("_", " ") for k in sorted(done["stages_ms"], key=lambda k: (k not in order,
                                                                                         order.index(k) if k in order else 0))]
    href = browser.find_element("id", "download").get_attribute("href")
    assert href.startswith("blob:")
    size = browser.execute_async_script(
        "const cb = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => r.arrayBuffer())"
        ".then(b => cb(b.byteLength))", href)
    assert size == 44 + 2 * state["samples"]   # the download is the streamed PCM as a WAV file
    _screenshot(browser, tmp_path, "speech.png")
    assert _console_errors(browser) == []
    assert _foreign_requests(browser, server.base) == []


def test_speech_page_speaks_with_a_cloned_voice(built, browser):
    """A Base model with a voices directory: the picker offers the cloned voice in its own group, and it speaks."""
    voices = built / "browser-voices"
    voices.mkdir(exist_ok=True)
    t = np.arange(48000) / 24000
    sf.write(voices / "alice.wav", (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))
             .astype(np.float32), 24000)
    with speech_server(built, "browser-base", "base", "--tts-voices-dir", str(voices), "--tts-max-frames", "12") as s:
        browser.get(s.base + "/speech")
        browser.get_log("browser")
        _wait(browser, "return window.q3speech && window.q3speech.state.voicesLoaded", 30, "the voices")
        groups = browser.execute_script(
            "return [...document.querySelectorAll('#voice optgroup')].map(g => [g.label, [...g.children].map(o => o.value)])")
        assert groups == [["cloned", ["alice"]]]
        browser.execute_script("document.getElementById('voice').value = 'alice'")
        browser.find_element("id", "speak").click()
        state = _wait(browser, "const s = window.q3speech.state; return (s.done || s.error) ? s : null", 180,
                      "the stream to finish")
        assert state["error"] is None and state["samples"] > 0
        assert _console_errors(browser) == []


def test_speech_page_shows_the_routes_error_message(server, browser):
    browser.get(server.base + "/speech")
    _wait(browser, "return window.q3speech && window.q3speech.state.voicesLoaded", 30, "the voices")
    # a voice the server does not have (one that went away since the page loaded, say)
    browser.execute_script("const o = new Option('nobody', 'nobody'); document.getElementById('voice').append(o);"
                           "document.getElementById('voice').value = 'nobody';")
    browser.find_element("id", "speak").click()
    shown = _wait(browser, "return window.q3speech.state.error", 60, "the error")
    r = requests.post(server.base + "/v1/audio/speech", timeout=60, json={
        "input": browser.find_element("id", "input").get_attribute("value"), "response_format": "pcm",
        "stream_format": "sse", "speed": 1, "language": "auto", "voice": "nobody"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "voice_not_found"
    assert shown == r.json()["error"]["message"]
    assert browser.find_element("id", "error").text == shown
