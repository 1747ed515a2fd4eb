"""tests/browser.py, the headless-Chromium harness for HTML reports, on small pages: a clean one passes
every check, and each fault (a thrown error, console.error, an external image, a blank page, a dangling
link) is caught, so a report test that passes shows the checks ran.
"""

import pytest

from . import browser as harness
from . import conftest
from .browser import is_blank_png, open_page

browser = harness.browser  # the session-scoped fixture, here by name for these tests

CLEAN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>clean</title>
<style>body { font-family: sans-serif; margin: 20px; } .bar { fill: #3366cc; }</style></head>
<body>
<h1 id="top">Clean report</h1>
<p>Two bars, <a href="#chart">the chart</a> and <a href="#top">back</a>.</p>
<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="600" height="400" viewBox="0 0 600 400">
  <rect class="bar" data-perception-id="p1" x="50" y="100" width="200" height="300"/>
  <rect class="bar" data-perception-id="p2" x="350" y="50" width="200" height="350"/>
  <text x="50" y="90">p1</text>
</svg>
<script>document.getElementById("top").dataset.ready = "1";</script>
</body></html>
"""


def page_file(tmp_path, body, name="page.html"):
    path = tmp_path / name
    path.write_text(body if body.lstrip().startswith("<!doctype") else
                    f"<!doctype html><html><head><meta charset='utf-8'><title>t</title></head><body>{body}</body></html>")
    return path


def test_clean_page_passes_every_check(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, CLEAN))
    assert page.console_errors == []
    assert page.network_requests == [] and page.file_requests == []
    assert page.ids == ["top", "chart"]
    assert page.hrefs == ["chart", "top"] and set(page.hrefs) <= set(page.ids)
    assert page.attr_values("[data-perception-id]", "data-perception-id") == ["p1", "p2"]
    assert page.attr_values("#top", "data-ready") == ["1"]  # its script ran
    assert page.count("svg rect.bar") == 2
    assert "Clean report" in page.text and "the chart" in page.text
    shot = page.screenshot(tmp_path / "clean.png")
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert not is_blank_png(shot)


def test_thrown_error_is_a_console_error(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<p>x</p><script>throw new Error("boom")</script>'))
    assert any("boom" in e for e in page.console_errors), page.console_errors


def test_console_error_is_reported(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<p>x</p><script>console.error("x-marks-the-spot")</script>'))
    assert any("x-marks-the-spot" in e for e in page.console_errors), page.console_errors


def test_console_log_is_not_an_error(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<p>x</p><script>console.log("fine"); console.warn("meh")</script>'))
    assert page.console_errors == []


def test_unhandled_rejection_is_reported(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<p>x</p><script>Promise.reject(new Error("nope"))</script>'))
    assert any("nope" in e for e in page.console_errors), page.console_errors


def test_external_image_is_a_network_request(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<p>x</p><img src="http://example.invalid/a.png" alt="a">'))
    assert "http://example.invalid/a.png" in page.network_requests
    assert page.console_errors  # the failed load is logged too


@pytest.mark.parametrize("markup", [
    '<link rel="stylesheet" href="https://cdn.example.invalid/style.css">',
    '<div style="background: url(\'https://example.invalid/bg.png\')">x</div>',
    '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><image href="https://example.invalid/i.png" width="10" height="10"/></svg>',
])
def test_external_references_are_reported(browser, tmp_path, markup):
    page = open_page(browser, page_file(tmp_path, f"<p>x</p>{markup}"))
    assert [u for u in page.network_requests if "example.invalid" in u], page.network_requests


def test_navigation_link_is_not_a_request(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<a href="https://example.invalid/docs">docs</a>'))
    assert page.network_requests == [] and page.console_errors == []


def test_local_file_reference_is_reported(browser, tmp_path):
    (tmp_path / "side.png").write_bytes(b"")
    page = open_page(browser, page_file(tmp_path, '<p>x</p><img src="side.png" alt="s">'))
    assert page.network_requests == []
    assert page.file_requests == [(tmp_path / "side.png").resolve().as_uri()]


def test_empty_white_page_is_blank(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, ""))
    shot = page.screenshot(tmp_path / "empty.png")
    assert is_blank_png(shot)


def test_screenshot_covers_a_long_page(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<div style="height: 5000px"></div><p id="end">end</p>'))
    shot = page.screenshot(tmp_path / "long.png")
    from PIL import Image

    with Image.open(shot) as image:
        assert image.width == 1280 and image.height >= 5000
    assert not is_blank_png(shot, threshold=0.00001)  # the one line of text at the bottom is in it
    assert browser.get_window_size()["height"] == 2000  # put back for the next page


def test_dangling_link_is_visible(browser, tmp_path):
    page = open_page(browser, page_file(tmp_path, '<p id="here">x</p><a href="#missing">gone</a><a href="#here">ok</a>'))
    assert page.hrefs == ["missing", "here"]
    assert "missing" not in page.ids and "here" in page.ids
    assert [h for h in page.hrefs if h not in page.ids] == ["missing"]


def test_is_blank_png(tmp_path):
    from PIL import Image, ImageDraw

    Image.new("RGB", (200, 100), "white").save(tmp_path / "white.png")
    assert is_blank_png(tmp_path / "white.png")
    image = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(image).rectangle([10, 10, 60, 60], fill="blue")
    image.save(tmp_path / "drawn.png")
    assert not is_blank_png(tmp_path / "drawn.png")
    assert is_blank_png(tmp_path / "drawn.png", threshold=0.5)


def test_missing_browser_skips_with_how_to_install(monkeypatch):
    monkeypatch.setattr(conftest, "GPV_REQUIRE", "")
    monkeypatch.setattr(harness, "_executable", lambda fixed, *names: None)
    with pytest.raises(pytest.skip.Exception, match=r"chromium and chromedriver not found .*apt-get install chromium chromium-driver"):
        harness.find_browser()
    monkeypatch.setattr(harness, "_executable", lambda fixed, *names: fixed)
    monkeypatch.setitem(__import__("sys").modules, "selenium", None)  # import selenium raises ImportError
    with pytest.raises(pytest.skip.Exception, match=r"selenium is not installed: pip install selenium"):
        harness.find_browser()


@pytest.mark.parametrize("required", ["all", "chromium", "slurm,chromium"])
def test_missing_browser_fails_where_gpv_require_asks_for_it(monkeypatch, required):
    monkeypatch.setattr(conftest, "GPV_REQUIRE", required)
    monkeypatch.setattr(harness, "_executable", lambda fixed, *names: None)
    with pytest.raises(pytest.fail.Exception, match=rf"chromium is missing, and GPV_REQUIRE={required} requires it: "
                                                    r"chromium and chromedriver not found"):
        harness.find_browser()


def test_a_late_console_error_is_waited_for(browser, tmp_path):
    """A page still at work after load (a chain of timers changing the DOM for ~0.3 s) has settled before the
    console is read: its error, logged with the last change, is caught (the harness once read at +0.05 s)."""
    page = open_page(browser, page_file(tmp_path, """<p id="n">0</p><script>
window.addEventListener("load", function () {
  var n = 0;
  (function tick() {
    document.getElementById("n").textContent = String(++n);
    if (n < 10) { setTimeout(tick, 30); } else { console.error("late-" + n); }
  })();
});</script>"""))
    assert any("late-10" in e for e in page.console_errors), page.console_errors
    assert page.text.strip() == "10"
