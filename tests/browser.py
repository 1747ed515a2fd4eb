"""A real headless Chromium for tests of HTML pages (gpv-report's report): console errors, requests the
page makes, elements, links, and screenshots.

    from . import browser as harness
    from .browser import is_blank_png, open_page

    browser = harness.browser  # the fixture, by name (an import of it would trip ruff's F811 at each use)

    def test_report(browser, tmp_path):
        page = open_page(browser, tmp_path / "report.html")
        assert page.console_errors == [] and page.network_requests == []
        page.screenshot(tmp_path / "report.png")
        assert not is_blank_png(tmp_path / "report.png")

The `browser` fixture starts one Chromium per test session (Selenium's Chrome driver, headless) and skips,
naming what is missing, where Chromium, chromedriver or selenium is not installed (fails instead under
GPV_REQUIRE=all, as CI runs: tests/conftest.py require).
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import require

WIDTH, HEIGHT = 1280, 2000  # the window every page opens in
MAX_SCREENSHOT_HEIGHT = 16000
PAGE_TIMEOUT = 30  # seconds a page may take to load

INSTALL_BROWSER = "apt-get install chromium chromium-driver (Debian/Ubuntu)"
INSTALL_SELENIUM = "pip install selenium (part of the dev extra: pip install -e '.[dev]')"

# Runs in every page before its own scripts: records uncaught errors, unhandled rejections and elements
# whose resource failed to load, in case the browser log misses any of them.
HOOK = """
window.__harness = {errors: []};
window.addEventListener('error', function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) {
    var url = t.src || (t.href && t.href.baseVal !== undefined ? t.href.baseVal : t.href);
    window.__harness.errors.push('failed to load ' + t.tagName.toLowerCase() + ' ' + url);
  } else {
    window.__harness.errors.push('Uncaught ' + (e.error && e.error.stack ? e.error.stack : e.message));
  }
}, true);
window.addEventListener('unhandledrejection', function (e) {
  var r = e.reason;
  window.__harness.errors.push('Unhandled rejection: ' + (r && r.stack ? r.stack : String(r)));
});
"""

# Resolves once the page has settled: its fonts are loaded, and for QUIET ms (arguments[0]) nothing has changed
# in its DOM and it has fetched nothing, across at least two animation frames (so that what a load handler, a
# timer or the first frames scheduled has run, and logged what it logs).
SETTLE = """
var quiet = arguments[0], done = arguments[arguments.length - 1];
var last = performance.now(), resources = performance.getEntriesByType('resource').length;
var observer = new MutationObserver(function () { last = performance.now(); });
observer.observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
function check() {
  requestAnimationFrame(function () { requestAnimationFrame(function () {
    var now = performance.getEntriesByType('resource').length;
    if (now !== resources) { resources = now; last = performance.now(); }
    if (performance.now() - last >= quiet) { observer.disconnect(); done(performance.now()); }
    else { setTimeout(check, 10); }
  }); });
}
(document.fonts ? document.fonts.ready : Promise.resolve()).then(check, check);
"""
SETTLE_QUIET_MS = 100

# Every URL the page asked for: resources the browser fetched (or tried to), and references in the DOM
# to anything outside the document (src, href of everything but navigation links, srcset, object data,
# poster, CSS url() in style attributes).
REQUESTS = """
var seen = new Set(), out = [];
function add(u) {
  if (!u) return;
  u = String(u).trim();
  if (!u || u[0] === '#') return;
  try { u = new URL(u, document.baseURI).href; } catch (e) { }
  if (/^(data|blob|about|javascript):/i.test(u) || u.split('#')[0] === location.href.split('#')[0]) return;
  if (!seen.has(u)) { seen.add(u); out.push(u); }
}
performance.getEntriesByType('resource').forEach(function (e) { add(e.name); });
document.querySelectorAll('*').forEach(function (el) {
  var tag = el.localName;
  var navigation = tag === 'a' || tag === 'area' || tag === 'form';
  ['src', 'data', 'poster', 'background'].forEach(function (a) { add(el.getAttribute(a)); });
  if (!navigation) { add(el.getAttribute('href')); add(el.getAttribute('xlink:href')); }
  var srcset = el.getAttribute('srcset');
  if (srcset) srcset.split(',').forEach(function (s) { add(s.trim().split(/\\s+/)[0]); });
  var style = el.getAttribute('style');
  if (style) (style.match(/url\\(([^)]*)\\)/g) || []).forEach(function (m) {
    add(m.slice(4, -1).trim().replace(/^['"]|['"]$/g, ''));
  });
});
return out;
"""


@dataclass
class Page:
    """What one page showed once loaded (open_page), plus reads and a screenshot of its live DOM."""

    driver: object = field(repr=False)
    url: str
    console_errors: list  # SEVERE browser-log messages and uncaught JS errors, in order
    network_requests: list  # every non-file: URL the page fetched or references (must be [] if self-contained)
    file_requests: list  # other local files it fetched or references (file: URLs besides the page itself)
    ids: list  # every element id in the DOM, in document order (duplicates kept)
    hrefs: list  # the targets of a[href^='#'] (and SVG <a>), without the '#', in document order
    text: str  # document.body.innerText

    def attr_values(self, selector, attr):
        """ATTR of every element matching the CSS SELECTOR that has it, in document order."""
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0]))"
            ".filter(e => e.hasAttribute(arguments[1])).map(e => e.getAttribute(arguments[1]));", selector, attr)

    def count(self, selector):
        """How many elements match the CSS SELECTOR."""
        return self.driver.execute_script("return document.querySelectorAll(arguments[0]).length;", selector)

    def screenshot(self, path, max_height=MAX_SCREENSHOT_HEIGHT):
        """Save the whole page (up to MAX_HEIGHT px tall) as a PNG at PATH; returns PATH."""
        height = self.driver.execute_script(
            "return Math.max(document.body ? document.body.scrollHeight : 0,"
            " document.documentElement.scrollHeight);")
        height = min(max(int(height), 1), max_height)
        self.driver.set_window_size(WIDTH, height)
        inner = self.driver.execute_script("return window.innerHeight;")
        if inner < height:  # the window's own frame takes some of its height: add that back
            self.driver.set_window_size(WIDTH, 2 * height - inner)
        try:
            if not self.driver.save_screenshot(str(path)):
                raise RuntimeError(f"the browser took no screenshot of {self.url}")
        finally:
            self.driver.set_window_size(WIDTH, HEIGHT)
        return Path(path)


def _executable(fixed, *names):
    if os.access(fixed, os.X_OK):
        return fixed
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_browser():
    """(chromium, chromedriver): their paths. Where either of them or selenium is not installed, the test
    skips (or fails, under GPV_REQUIRE: tests/conftest.py require), naming what is missing and how to
    install it."""
    chromium = _executable("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
    chromedriver = _executable("/usr/bin/chromedriver", "chromedriver")
    missing = [what for what, found in (("chromium", chromium), ("chromedriver", chromedriver)) if not found]
    if missing:
        require("chromium", f"{' and '.join(missing)} not found (looked in /usr/bin and on PATH): {INSTALL_BROWSER}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        require("chromium", f"selenium is not installed: {INSTALL_SELENIUM}")
    return chromium, chromedriver


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (a Selenium WebDriver) for the session, with its console log captured;
    skips (or fails under GPV_REQUIRE), naming what is missing, without Chromium, chromedriver or selenium."""
    chromium, chromedriver = find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions"):
        options.add_argument(arg)  # --no-sandbox: Chromium's sandbox cannot start as root in a container
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit chromedriver: Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        driver.set_window_size(WIDTH, HEIGHT)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
        yield driver
    finally:
        driver.quit()


def open_page(browser, path):
    """Load the local file PATH in BROWSER (the fixture), wait until document.readyState is complete and then
    until the page has settled (SETTLE: SETTLE_QUIET_MS without a change or a fetch), and return a Page: its
    console errors, requests, ids, '#' link targets and text."""
    from selenium.webdriver.support.ui import WebDriverWait

    url = Path(path).resolve().as_uri()
    browser.get("about:blank")
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(url)
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda d: d.execute_script("return document.readyState;") == "complete")
    browser.set_script_timeout(PAGE_TIMEOUT)
    browser.execute_async_script(SETTLE, SETTLE_QUIET_MS)

    errors = [entry["message"] for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    hooked = browser.execute_script("return window.__harness ? window.__harness.errors : [];") or []
    for message in hooked:  # uncaught errors the log missed (the log usually has them already)
        first = message.splitlines()[0].replace("Uncaught ", "", 1)
        key = first.rsplit(" ", 1)[-1] if first.startswith("failed to load ") else first  # the URL
        if not any(key in logged for logged in errors):
            errors.append(message)

    requested = browser.execute_script(REQUESTS)
    return Page(
        driver=browser,
        url=url,
        console_errors=errors,
        network_requests=[u for u in requested if not u.lower().startswith("file:")],
        file_requests=[u for u in requested if u.lower().startswith("file:")],
        ids=browser.execute_script("return Array.from(document.querySelectorAll('[id]'), e => e.id);"),
        hrefs=browser.execute_script(
            "return Array.from(document.querySelectorAll(\"a[href^='#']\"), e => e.getAttribute('href').slice(1));"),
        text=browser.execute_script("return document.body ? document.body.innerText : '';"),
    )


def is_blank_png(path, threshold=0.01):
    """True when the image at PATH is (nearly) one colour: under THRESHOLD of its pixels differ from
    its most common colour."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB")
        total = rgb.width * rgb.height
        if total == 0:
            return True
        colors = rgb.getcolors(maxcolors=total)
    most = max(count for count, _ in colors)
    return (total - most) < threshold * total
