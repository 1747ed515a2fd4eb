"""gpv-report's page opened in a real headless Chromium (tests/browser.py): the report of `make demo`'s output
and of bench/blogs.sh's, each run for real. No console errors, nothing fetched, every group and value shown,
every link lands on an element, every evidence row names a perception of the input, and the page renders
(a screenshot that is not blank). Also the PNG path, for users without a browser."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gpvtools.method.values import system

from . import browser as harness
from .browser import is_blank_png, open_page
from .conftest import ROOT

browser = harness.browser  # the fixture, by name

pytestmark = pytest.mark.slow


def read_jsonl(path):
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def check_report(browser, page_path, profiles_path, scored_path, shot):
    """Everything a reader relies on, checked in the rendered page; returns the Page."""
    profiles = read_jsonl(profiles_path)
    scored_ids = {r["id"] for r in read_jsonl(scored_path)}
    assert profiles and scored_ids
    page = open_page(browser, page_path)
    assert page.console_errors == []
    assert page.network_requests == [] and page.file_requests == []
    # Every group, with its number of perceptions, and every value of every profile.
    groups = page.driver.execute_script(
        "return Array.from(document.querySelectorAll('#groups section.group h3')).map(e => e.textContent);")
    assert sorted(groups) == sorted(p["author"] for p in profiles)
    values = {v for p in profiles for v in p["values"]}
    assert values >= set(system("schwartz"))
    for value in values:
        assert value in page.text, value
    # Links: every in-page link lands on an element, and ids are unique.
    assert len(page.ids) == len(set(page.ids))
    assert page.hrefs and set(page.hrefs) <= set(page.ids), set(page.hrefs) - set(page.ids)
    # Evidence: each row names a perception that exists in the scored input, and there is some for each group.
    shown = page.attr_values("tr[data-perception-id]", "data-perception-id")
    assert shown and set(shown) <= scored_ids, set(shown) - scored_ids
    for gi in range(len(profiles)):
        assert page.count(f"#ev-{gi} tr[data-perception-id]") > 0, profiles[gi]["author"]
    page.screenshot(shot)
    assert not is_blank_png(shot)
    return page


def test_the_report_of_make_demo(browser, tmp_path):
    """`make demo`'s first part (blog posts -> parse -> score -> profiles -> report), with this Python's commands."""
    demo = tmp_path / "demo"
    env = {**os.environ, "GPV_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "demo-posts", f"DEMO={demo}",
                           f"BIN={Path(sys.executable).parent}"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (demo / "report.html").is_file()
    page = check_report(browser, demo / "report.html", demo / "authors.jsonl", demo / "scored.jsonl",
                        tmp_path / "demo.png")
    assert "gpvtools demo" in page.text
    # The instrument that scored is on the page, by its id.
    tag = read_jsonl(demo / "scored.jsonl")[0]["scorer"]
    assert tag.rsplit("@", 1)[1] in page.text


def test_the_report_of_bench_blogs_sh(browser, posts_path, tmp_path):
    """bench/blogs.sh on the first 30 blog posts (two perceptions each), up to its report (the validation
    protocols after it need more data than that)."""
    # The script finds the dictionary beside the posts' folder, as in ../shared/data.
    (tmp_path / "blogs").mkdir()
    (tmp_path / "dictionaries").symlink_to(posts_path.parent.parent / "dictionaries")
    posts = tmp_path / "blogs" / "posts.jsonl"
    posts.write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:30]) + b"\n")
    out = tmp_path / "out"
    env = {**os.environ, "GPV_CACHE_DIR": str(tmp_path / "cache"), "GPV_THREADS": "2", "GPV_PROTOCOLS": "0"}
    done = subprocess.run(["sh", str(ROOT / "bench" / "blogs.sh"), str(posts), str(out), "2"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    check_report(browser, out / "report.html", out / "authors.jsonl", out / "scored.jsonl", tmp_path / "blogs.png")


def test_png_charts_without_a_browser(tmp_path, posts_path):
    """--png on real profiles (two sentences of each of 12 posts' first chunk): a chart per group, the comparison and the circumplex, none of them blank."""
    posts = tmp_path / "posts.jsonl"
    posts.write_bytes(b"\n".join(posts_path.read_bytes().splitlines()[:12]) + b"\n")
    done = subprocess.run(
        f"gpv-chunk -q {posts} | gpv-parse -q --backend sentences | grep -E '#c0#p[01]\"' "
        f"| gpv-score -q --values schwartz --threads 2 "
        f"| gpv-aggregate -q --by author | gpv-report -q --png {tmp_path / 'charts'}",
        shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    charts = sorted(p.name for p in (tmp_path / "charts").iterdir())
    assert "compare.png" in charts and "circumplex.png" in charts
    assert len([c for c in charts if c.startswith("profile-")]) >= 2
    for chart in charts:
        assert not is_blank_png(tmp_path / "charts" / chart), chart
