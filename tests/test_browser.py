"""Every page of the quick book in a real browser (Debian's headless Chromium, driven by selenium).

The book is served from 127.0.0.1; on each page we check that math is typeset by the local MathJax with
no request leaving the machine, every image loads, the console shows no errors, and nothing is wider than
the viewport. `.ci/run` installs chromium and chromium-driver; elsewhere the test is skipped without them.
Set ALIGNKD_SCREENSHOTS=<folder> to keep a full-page screenshot of every page.
"""

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]
VIEWPORTS = {"desktop": (1280, 900), "phone": (412, 900)}

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
    pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver",
                allow_module_level=True)

pytestmark = pytest.mark.book

# Anything wider than the viewport that is not clipped by a scrolling box. Off-canvas drawers and hidden
# dialogs are invisible and do not count.
OVERFLOW_JS = """
const vw = document.documentElement.clientWidth, bad = [];
function clipped(el) {
  for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
    const style = getComputedStyle(p);
    if (style.overflowX !== 'visible' && p.getBoundingClientRect().right <= vw + 1) return true;
  }
  return false;
}
for (const el of document.querySelectorAll('body *')) {
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || style.display === 'none' || el.closest('dialog:not([open])')) continue;
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  if ((r.right > vw + 1 || r.left < -1) && !clipped(el)) {
    bad.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + '.' + el.className + ' ' +
             Math.round(r.left) + '..' + Math.round(r.right));
  }
}
return {scroll: document.documentElement.scrollWidth, viewport: vw, bad: bad.slice(0, 5)};
"""

IMAGES_JS = """
return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 120));
"""

# Within the article, figures, code and tables fit the text column (a wide table may scroll in its own box).
CONTENT_JS = """
const article = document.querySelector('article.bd-article') || document.querySelector('main');
if (!article) return [];
const width = article.getBoundingClientRect().right + 1, bad = [];
function inScrollBox(el) {
  for (let p = el.parentElement; p && p !== article; p = p.parentElement) {
    if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) return p.getBoundingClientRect().right <= width;
  }
  return false;
}
for (const el of article.querySelectorAll('img, pre, figure, div.cell_output, table, mjx-container')) {
  const r = el.getBoundingClientRect();
  if (r.width === 0 || inScrollBox(el)) continue;
  if (r.right > width) bad.push(el.tagName.toLowerCase() + '.' + el.className + ' right ' + Math.round(r.right));
  if (el.tagName === 'PRE' && el.scrollWidth > el.clientWidth + 1) bad.push('pre scrolls sideways');
}
return bad.slice(0, 5);
"""

MATH_JS = """
const done = arguments[arguments.length - 1];
if (!window.MathJax || !MathJax.startup) { done({loaded: false}); return; }
MathJax.startup.promise.then(() => done({
  loaded: true,
  typeset: document.querySelectorAll('mjx-container').length,
  errors: document.querySelectorAll('mjx-merror').length,
  source: Array.from(document.scripts).map(s => s.src).filter(s => /mathjax/i.test(s)),
}));
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(quick_book):
    root, _ = quick_book
    html = root / "_build" / "html"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield html, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _pages(html: Path) -> list[str]:
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _screenshot(driver, path: Path, width: int, height: int) -> None:
    """The whole page: the window is made as tall as the page (at most 12000 px), then restored."""
    full = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(full + 140, 12000))
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(width, height)


def test_every_page_renders_offline_with_math_images_and_no_overflow(site, browser):
    html, base = site
    pages = _pages(html)
    assert "book/generated/claims.html" in pages and "book/chapters/01_theory.html" in pages
    screenshots = os.environ.get("ALIGNKD_SCREENSHOTS")
    problems = []
    for viewport, (width, height) in VIEWPORTS.items():
        browser.set_window_size(width, height)
        for page in pages:
            browser.get_log("performance"), browser.get_log("browser")  # start each page with empty logs
            browser.get(f"{base}/{page}")
            source = (html / page).read_text()
            where = f"{page} ({viewport})"

            foreign = [u for u in _requests(browser)
                       if urlparse(u).scheme not in ("data", "blob", "about") and not u.startswith(base)]
            if foreign:
                problems.append(f"{where}: requests leave the machine: {foreign[:3]}")
            if "math notranslate" in source:
                math = browser.execute_async_script(MATH_JS)
                if not math["loaded"] or not math["typeset"] or math["errors"]:
                    problems.append(f"{where}: math not typeset by MathJax: {math}")
                elif any(not s.startswith(base) for s in math["source"]):
                    problems.append(f"{where}: MathJax not served locally: {math['source']}")
            broken = browser.execute_script(IMAGES_JS)
            if broken:
                problems.append(f"{where}: images that did not load: {broken}")
            errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            if errors:
                problems.append(f"{where}: console errors: {errors[:3]}")
            overflow = browser.execute_script(OVERFLOW_JS)
            if overflow["scroll"] > overflow["viewport"] + 1 or overflow["bad"]:
                problems.append(f"{where}: wider than the viewport: {overflow}")
            if viewport == "desktop":
                wide = browser.execute_script(CONTENT_JS)
                if wide:
                    problems.append(f"{where}: wider than the text column: {wide}")
            if screenshots:
                _screenshot(browser, Path(screenshots) / viewport / page.replace("/", "_").replace(".html", ".png"),
                            width, height)
    assert not problems, "\n".join(problems)
