"""End to end in headless Chromium: type a query on the served page and see result thumbnails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from clipforge.index import EmbedConfig, embed_collection  # noqa: E402
from clipforge.serve.app import ServeConfig  # noqa: E402
from test_index import make_images, make_model  # noqa: E402
from test_serve_guard import live_server  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
)
_ALL_LOADED = "return Array.from(arguments[0]).every(i => i.complete && i.naturalWidth > 0)"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """A live server over a 9-image index, on a free loopback port, stopped after the test."""
    model = make_model(tmp_path / "model")
    make_images(tmp_path / "images", count=9, bad=False)
    config = EmbedConfig(str(model), tmp_path / "idx", images=tmp_path / "images", workers=0, progress=False)
    embed_collection(config)
    with live_server(ServeConfig(tmp_path / "idx")) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")  # a fresh profile per run
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager go looking for drivers
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def _loaded_thumbnails(driver: webdriver.Chrome) -> list[object]:
    images = driver.find_elements(By.CSS_SELECTOR, "#results .result img")
    done = driver.execute_script(_ALL_LOADED, images)
    return images if images and done else []


def test_typing_a_query_shows_result_thumbnails(
    server_url: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(server_url + "/")
    WebDriverWait(browser, 20).until(lambda d: "9 images" in d.find_element(By.ID, "status").text)
    box = browser.find_element(By.ID, "query")
    box.send_keys("a red square")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    thumbnails = WebDriverWait(browser, 20).until(_loaded_thumbnails)
    assert len(thumbnails) == 9  # k defaults to 12 in the page; the index holds 9
    scores = [float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#results .score")]
    assert scores == sorted(scores, reverse=True)
    assert "results for" in browser.find_element(By.ID, "message").text
    artifacts = Path(os.environ.get("CLIPFORGE_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "search-ui.png"))
