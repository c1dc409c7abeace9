"""The page in a real browser: Debian's headless chromium (driven by Selenium) uploads a photo to `dvsa serve`'s
app on loopback, reads the caption from the page, aligns a sentence and saves a screenshot."""
import os
import shutil
import tempfile

import pytest
from api_fakes import toy_run
from dvsa.align.aligner import Aligner
from dvsa.align.index import Index
from dvsa.generate.serve.app import create_app
from dvsa.generate.serve.bench import ServerThread
from dvsa.generate.serve.toy import toy_photo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(profile: str):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        pytest.skip(f"no browser: {CHROMIUM} or {DRIVER} is missing (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1100,1000", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def test_upload_a_photo_and_read_its_caption(tmp_path, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    run = toy_run(tmp_path_factory)
    al = Aligner.load(run)
    idx = Index.build(al, sorted((run / "photos").glob("*.png")), show_progress=False)
    photo = toy_photo(tmp_path / "photo.png", "red", "square", k=2)
    profile = tempfile.mkdtemp(prefix="dvsa-chromium-", dir=tmp_path)
    with ServerThread(create_app(run, idx, aligner=al)) as url:
        drv = browser(profile)
        try:
            drv.get(url + "/")
            wait = WebDriverWait(drv, 60)
            wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("ready"))
            drv.find_element(By.ID, "photo").send_keys(str(photo))
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-captioned") == "1"
                       or d.find_element(By.ID, "error").text)
            assert drv.find_element(By.ID, "error").text == ""
            caption = drv.find_element(By.ID, "caption").text
            assert caption and caption != "…"
            assert drv.find_elements(By.CSS_SELECTOR, "#boxes rect")  # dense boxes drawn on the photo
            assert drv.find_elements(By.CSS_SELECTOR, "#regions li")
            drv.find_element(By.ID, "sentence").send_keys("a red square on a white background")
            drv.find_element(By.ID, "align-btn").click()
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-aligned") == "1")
            words = [e.text for e in drv.find_elements(By.CSS_SELECTOR, "#snippets .chip")]
            assert " ".join(words).split() == ["a", "red", "square", "on", "a", "white", "background"]
            drv.find_element(By.ID, "query").send_keys("a blue circle")
            drv.find_element(By.ID, "search-btn").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure")) > 0)
            shot = tmp_path / "serve_page.png"
            assert drv.save_screenshot(str(shot)) and shot.stat().st_size > 1000
            print(f"caption on the page: {caption!r}; screenshot: {shot}")
        finally:
            drv.quit()
