"""advkit serve in a real headless Chromium (Debian's chromium and chromedriver, driven by
selenium with both executables named: no driver download). The server runs in-process (uvicorn in
a thread on a free 127.0.0.1 port); each test saves a screenshot under its tmp_path."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from serve_helpers import free_port
from web_builders import stroke_png

pytest.importorskip("fastapi")
pytest.importorskip("selenium")
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and DRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium "
                "chromium-driver; .ci/run installs them)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(web_cache, tmp_path_factory):
    import uvicorn

    from advkit.serve.web.app import WebOptions, build_app

    root = tmp_path_factory.mktemp("web-server")
    opts = WebOptions(history=root / "history.sqlite", runs_dir=root / "runs", scan_cache=False)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(build_app(opts), host="127.0.0.1", port=port,
                                        log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(30)
    assert not thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1100"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _wait(browser, cond, timeout=120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(cond)


def _by(css):
    from selenium.webdriver.common.by import By

    return (By.CSS_SELECTOR, css)


def _top(browser, panel: str) -> str:
    first = browser.find_element(*_by(f"#{panel} .top5 li"))
    return first.text.split(":")[0]


def test_playground_fgsm_flips_a_digit(server, browser, tmp_path):
    browser.get(server + "/")
    samples = _wait(browser, lambda b: b.find_elements(*_by("#grid img.sample")))
    samples[5].click()  # pick a digit
    assert "label" in samples[5].get_attribute("title")
    eps = browser.find_element(*_by("#fields input[name=eps]"))
    eps.clear()
    eps.send_keys("0.3")
    browser.find_element(*_by("#go")).click()
    _wait(browser, lambda b: b.find_element(*_by("#status")).text == "done"
          or b.find_element(*_by("#error")).text)
    assert browser.find_element(*_by("#error")).text == ""
    clean, adv = _top(browser, "p-original"), _top(browser, "p-adversarial")
    browser.save_screenshot(str(tmp_path / "playground-fgsm.png"))
    assert clean != adv, (clean, adv)
    caption = browser.find_element(*_by("#p-perturbation .cap")).text
    assert "L∞ 0.300" in caption
    assert "Goodfellow" in browser.find_element(*_by("#attack-doc")).text


def test_upload_a_png_and_get_predictions(server, browser, tmp_path):
    img = tmp_path / "digit.png"
    img.write_bytes(stroke_png())
    browser.get(server + "/")
    _wait(browser, lambda b: b.find_elements(*_by("#grid img.sample")))
    browser.find_element(*_by("#file")).send_keys(str(img))
    _wait(browser, lambda b: "predicted" in b.find_element(*_by("#upload-status")).text
          or b.find_element(*_by("#error")).text)
    browser.save_screenshot(str(tmp_path / "playground-upload.png"))
    assert browser.find_element(*_by("#error")).text == ""
    # a white stroke on black, scaled to 8 x 8, reads as a 1 (the sklearn digits are light on dark)
    assert browser.find_element(*_by("#upload-status")).text == "uploaded: predicted 1"
    assert len(browser.find_elements(*_by("#p-original .top5 li"))) == 5
    assert not browser.find_element(*_by("#p-adversarial")).is_displayed()  # no attack yet


def test_run_the_quick_preset_reload_find_it_in_the_history_and_open_the_report(
        server, browser, tmp_path):
    """The run page starts the quick privacy preset (digits, about 16 s from an empty cache on
    2 cores: the fastest quick preset); the run survives a reload and lands in the history."""
    from selenium.webdriver.support.ui import Select

    title = "advkit privacy audit (quick)"
    browser.get(server + "/run")
    Select(browser.find_element(*_by("#preset"))).select_by_value("privacy")
    assert browser.find_element(*_by("#quick")).is_selected()
    browser.find_element(*_by("#start-preset")).click()
    _wait(browser, lambda b: b.find_element(*_by("#run-status")).text, 30)
    browser.refresh()  # the run lives on the server: the page picks it up again
    _wait(browser, lambda b: b.find_element(*_by("#run-status")).text in ("done", "failed"), 300)
    browser.save_screenshot(str(tmp_path / "run-done.png"))
    assert browser.find_element(*_by("#run-status")).text == "done", \
        browser.find_element(*_by("#error")).text
    assert "done in" in browser.find_element(*_by("#run-log")).text
    browser.get(server + "/audits")
    row = browser.find_element(*_by("#history tr[data-id]"))
    assert title in row.text
    browser.save_screenshot(str(tmp_path / "audits.png"))
    row.find_element(*_by("a.report-link")).click()
    _wait(browser, lambda b: "/report" in b.current_url)
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert title in browser.page_source
    for shot in ("run-done.png", "audits.png", "report.png"):
        assert (tmp_path / shot).stat().st_size > 1000
