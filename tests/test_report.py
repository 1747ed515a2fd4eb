"""gpv-report: every group, value and link on the page; the right evidence, escaped; byte-identical output;
bad lines; instruments; PNG charts; a real pipeline."""

import random
import re
import subprocess
import sys

import orjson
import pytest

from gpvtools.commands import aggregate, report
from gpvtools.method.report import CIRCLE, NOT_RECORDED
from gpvtools.method.values import system

SCHWARTZ = system("schwartz")
INSTRUMENT = {"id": "gpv1-3f2a9c1d7e4b5a60", "backend": "llama-cpp",
              "model": {"name": "builtin", "file": "x.gguf", "bytes": 98362432, "sha256": "ab" * 32},
              "adapter": None, "calibration": None, "prompts": "sha256:" + "cd" * 32, "threshold": 0.5,
              "precision": "f32", "gpvtools": "0.9.0", "command": "gpv-score --values schwartz"}
HOSTILE = ['<script>alert(1)</script>', '"quotes" & ampersands']


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def scored(n=90, authors=("a1", "a2", "a3"), seed=7):
    """Scored perceptions of the 10 Schwartz values, ties included (scores on a grid of 0.25), some unmeasured;
    a2 never measures Power (a gap in the circle)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        author = authors[i % len(authors)]
        values = {}
        for name in SCHWARTZ:
            measured = rng.random() < 0.6 and not (author == "a2" and name == "Power")
            score = rng.choice([-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]) if measured else None
            values[name] = {"relevance": round(rng.uniform(0.5, 1), 3) if measured else 0.2,
                            "support": round(rng.random(), 3), "oppose": round(rng.random(), 3), "score": score}
        out.append({"id": f"d{i}#c{i % 2}#p{i % 3}", "doc_id": f"d{i}", "author": author, "gender": "f",
                    "perception": f"perception {i}: {HOSTILE[i % 2]}", "values": values, "scorer": "test:hand"})
    return out


def profiles_of(invoke, records, *args):
    result = invoke(aggregate.main, ["--by", "author", "-q", *args], jsonl(records))
    assert result.exit_code == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def files(invoke, tmp_path):
    records = scored()
    (tmp_path / "scored.jsonl").write_bytes(jsonl(records))
    profiles = profiles_of(invoke, records, "--keep", "gender", "--higher-order")
    (tmp_path / "profiles.jsonl").write_bytes(jsonl(profiles))
    return tmp_path, records, profiles


def run_report(invoke, tmp_path, *args, profiles="profiles.jsonl"):
    return invoke(report.main, [str(tmp_path / profiles), *args])


def captioned_tables(page):
    """{(group id, value): {caption: ids}} of the evidence tables as the page shows them."""
    out = {}
    for section in page.split('<section class="group" id="ev-')[1:]:
        group = re.search(r'<h3>Evidence for <a href="#g-\d+">(.*?)</a></h3>', section).group(1)
        for block in section.split('<div id="ev-')[1:]:
            name = re.search(r"<h4>(.*?)</h4>", block).group(1)
            out[(group, name)] = {caption: re.findall(r'data-perception-id="([^"]*)"', body)
                                  for caption, body in re.findall(r"<caption>(.*?)</caption>(.*?)</table>", block,
                                                                  re.S)}
    return out


def evidence_tables(page):
    """{(group id, value): (raised ids, lowered ids)} as the page shows them."""
    return {key: (tables.get("raised the score", []), tables.get("lowered the score", []))
            for key, tables in captioned_tables(page).items()}


def at_mean_tables(page):
    """{(group id, value): ids shown at the group's mean}."""
    return {key: tables.get("at the group's mean", []) for key, tables in captioned_tables(page).items()}


def expected_evidence(records, profiles, k):
    """The top-k above each group's mean (highest first) and below it (lowest first), ties by id, by hand."""
    out = {}
    for p in profiles:
        for name in SCHWARTZ:
            mean = p["values"][name]["score"]
            mean = 0.0 if mean is None else mean
            pairs = [(r["values"][name]["score"], r["id"]) for r in records
                     if r["author"] == p["id"] and r["values"][name]["score"] is not None]
            raised = sorted((p_ for p_ in pairs if p_[0] > mean), key=lambda x: (-x[0], x[1]))[:k]
            lowered = sorted((p_ for p_ in pairs if p_[0] < mean), key=lambda x: (x[0], x[1]))[:k]
            out[(p["id"], name)] = ([i for _, i in raised], [i for _, i in lowered])
    return out


def test_every_group_value_and_link_is_on_the_page(invoke, files):
    tmp_path, records, profiles = files
    result = run_report(invoke, tmp_path, "--evidence", str(tmp_path / "scored.jsonl"))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    page = result.stdout
    for p in profiles:
        assert f"<h3>{p['id']}</h3>" in page
        for name in p["values"]:
            assert f">{name}</a>" in page
    all_ids = re.findall(r'(?<![-\w])id="([^"]+)"', page)
    ids = set(all_ids)
    assert len(all_ids) == len(ids)  # unique
    hrefs = re.findall(r'href="#([^"]*)"', page)
    assert hrefs and set(hrefs) <= ids
    assert {f"ev-{g}-{v}" for g in range(len(profiles)) for v in range(len(profiles[0]["values"]))} <= ids
    known = {r["id"] for r in records}
    shown = re.findall(r'data-perception-id="([^"]*)"', page)
    assert shown and set(shown) <= known
    assert "3 groups, 14 values, 90 perceptions read as evidence (90 in these groups)" in page
    assert f"gpv-report {tmp_path / 'profiles.jsonl'} --evidence {tmp_path / 'scored.jsonl'}" in page


@pytest.mark.parametrize("k", [1, 3])
def test_the_evidence_is_the_top_and_bottom_of_each_group(invoke, files, k):
    tmp_path, records, profiles = files
    result = run_report(invoke, tmp_path, "--evidence", str(tmp_path / "scored.jsonl"), "--top-k", str(k))
    tables = evidence_tables(result.stdout)
    expected = expected_evidence(records, profiles, k)
    assert {key: tables[key] for key in expected} == expected
    assert sum(len(r) + len(lo) for r, lo in expected.values()) > 30 * k  # the test compares something
    # higher-order values have no perceptions of their own
    assert tables[("a1", "Conservation")] == ([], [])


def test_perceptions_at_the_mean_are_shown_as_such(invoke, tmp_path):
    """A group of one perception, and one whose perceptions all score alike, have no perception above or
    below the mean: the page shows them "at the group's mean", the K most relevant, ties by id."""
    def one(i, author, score, relevance):
        values = {name: {"relevance": relevance, "support": 0.9, "oppose": 0.1, "score": score} for name in SCHWARTZ}
        return {"id": f"d{i}#c0#p0", "doc_id": f"d{i}", "author": author, "perception": f"p{i}", "values": values}

    records = [one(0, "solo", 0.5, 0.7)] + [one(i, "alike", -0.25, r) for i, r in
                                             zip(range(1, 6), [0.6, 0.9, 0.8, 0.9, 0.55])]
    (tmp_path / "scored.jsonl").write_bytes(jsonl(records))
    (tmp_path / "profiles.jsonl").write_bytes(jsonl(profiles_of(invoke, records)))
    result = run_report(invoke, tmp_path, "--evidence", str(tmp_path / "scored.jsonl"), "--top-k", "3")
    assert result.exit_code == 0, result.stderr
    at_mean = at_mean_tables(result.stdout)
    assert at_mean[("solo", "Power")] == ["d0#c0#p0"]
    assert at_mean[("alike", "Power")] == ["d2#c0#p0", "d4#c0#p0", "d3#c0#p0"]  # relevance 0.9, 0.9, 0.8
    assert evidence_tables(result.stdout)[("alike", "Power")] == ([], [])


def test_user_text_is_escaped_and_nothing_is_loaded(invoke, tmp_path):
    records = scored(12)
    records[0]["id"] = 'p"><img src=x onerror=alert(1)>#c0#p0'
    records[1]["author"] = "<b>bold</b> & co"
    (tmp_path / "scored.jsonl").write_bytes(jsonl(records))
    (tmp_path / "profiles.jsonl").write_bytes(jsonl(profiles_of(invoke, records)))
    page = run_report(invoke, tmp_path, "--evidence", str(tmp_path / "scored.jsonl"), "--title", "<i>T</i>",
                      "--top-k", "20").stdout
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;quotes&quot; &amp; ampersands" in page
    assert 'data-perception-id="p&quot;&gt;&lt;img src=x onerror=alert(1)&gt;#c0#p0"' in page
    assert "<h3>&lt;b&gt;bold&lt;/b&gt; &amp; co</h3>" in page and "<title>&lt;i&gt;T&lt;/i&gt;</title>" in page
    for tag in ("<script", "<img", "<b>", "<i>", "<link", "<iframe", "src=\"", "url(", "@import", "http://",
                "https://"):
        assert tag not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_byte_identical_across_runs_and_evidence_order(invoke, files):
    tmp_path, records, _ = files
    args = ["--evidence", str(tmp_path / "scored.jsonl"), "-o", str(tmp_path / "r.html"), "--top-k", "2"]
    assert run_report(invoke, tmp_path, *args).exit_code == 0
    first = (tmp_path / "r.html").read_bytes()
    assert run_report(invoke, tmp_path, *args).exit_code == 0
    assert (tmp_path / "r.html").read_bytes() == first
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    assert shuffled != records
    (tmp_path / "scored.jsonl").write_bytes(jsonl(shuffled))
    assert run_report(invoke, tmp_path, *args).exit_code == 0
    assert (tmp_path / "r.html").read_bytes() == first


def test_circumplex_gaps_and_the_profile_chart_unmeasured_label(invoke, files):
    tmp_path, _, profiles = files
    page = run_report(invoke, tmp_path).stdout
    assert profiles[1]["values"]["Power"] == {"score": None, "n": 0, "sd": None}
    circle = page.split('<section id="circumplex">')[1].split("</section>")[0]
    assert circle.count("<polygon") == 2 and circle.count("<polyline") == 1  # a2 leaves Power out
    assert all(f">{name}</text>" in circle for name in CIRCLE)
    assert ">0</text>" in circle
    group = page.split('<section class="group" id="g-1">')[1].split("</section>")[0]
    assert "unmeasured (n=0)" in group
    assert 'href="#ev-' not in page  # no evidence, no links to it
    assert 'id="evidence"' not in page


def test_no_circumplex_without_the_ten_values_and_many_groups_are_capped(invoke, tmp_path):
    records = [{"id": f"p{i}", "author": f"g{i:02d}", "perception": "x", "scorer": "s",
                "values": {"Power": {"score": 0.5 if i % 2 else -0.25}, "Care": {"score": None}}} for i in range(15)]
    (tmp_path / "profiles.jsonl").write_bytes(jsonl(profiles_of(invoke, records)))
    page = run_report(invoke, tmp_path).stdout
    assert 'id="circumplex"' not in page
    assert "Showing the 12 groups with the most perceptions of 15" in page
    legend = page.split('<section id="comparison">')[1].split("</p>")[2]
    assert legend.count('class="swatch"') == 12
    assert all(f"<h3>g{i:02d}</h3>" in page for i in range(15))


def test_profiles_without_instrument_and_with_several(invoke, tmp_path):
    base = {"n_perceptions": 2, "values": {"Power": {"score": 0.5, "n": 2, "sd": 0.1}}, "scorer": "s",
            "group_by": ["author"]}
    other = dict(INSTRUMENT, id="gpv1-0000000000000000", command="gpv-score -m other.gguf")
    rows = [{"id": "a", "author": "a", **base},
            {"id": "b", "author": "b", **base, "instrument": INSTRUMENT},
            {"id": "c", "author": "c", **base, "instrument": [INSTRUMENT, other]}]
    (tmp_path / "profiles.jsonl").write_bytes(jsonl(rows))
    result = run_report(invoke, tmp_path)
    assert result.exit_code == 0, result.stderr
    section = result.stdout.split('<section id="instruments">')[1].split("</section>")[0]
    assert NOT_RECORDED in section
    assert section.count('<div class="card">') == 3
    assert "<h3>gpv1-3f2a9c1d7e4b5a60</h3>" in section and "<h3>gpv1-0000000000000000</h3>" in section
    assert "<dt>model.sha256</dt><dd>" + "ab" * 32 + "</dd>" in section
    assert "<dt>model.bytes</dt><dd><code>98362432</code></dd>" in section
    assert "<code>gpv-score --values schwartz</code>" in section and "<code>gpv-score -m other.gguf</code>" in section
    assert "Used by 2 groups: b, c" in section


@pytest.mark.parametrize("which,line,expected", [
    ("profiles", b"{bad\n", "line 2: invalid JSON: unexpected character, expected a string key at column 2"),
    ("profiles", b'{"id": "x", "n_perceptions": 1, "values": []}\n', "line 2: field 'values' must be an object, got an array"),
    ("profiles", b'{"id": "x", "n_perceptions": 1, "values": {"Power": {"score": "high", "n": 1}}}\n',
     "line 2: values.Power.score must be a number or null, got a string"),
    ("profiles", b'{"id": "a1", "author": "a1", "n_perceptions": 1, "values": {}, "group_by": ["author"]}\n',
     "line 2: group 'a1' repeats line 1's (pool shards with gpv-aggregate --merge)"),
    ("profiles", b'{"id": "b", "n_perceptions": 1, "values": {}, "group_by": ["author"]}\n',
     "line 2: field 'author' is missing (the profile is grouped by author)"),
    ("evidence", b"[1]\n", "line 2: expected a JSON object, got an array"),
    ("evidence", b'{"id": "p", "author": "a1", "perception": "x"}\n', "line 2: field 'values' is missing"),
    ("evidence", b'{"id": "p", "author": "a1", "perception": "x", "values": "no"}\n',
     "line 2: field 'values' must be an object, got a string"),
    ("evidence", b'{"id": "p", "author": "a1", "perception": "x", "values": {"Power": {"score": true}}}\n',
     "line 2: values.Power.score must be a number or null, got true"),
    ("evidence", b'{"id": "p", "author": "a1", "values": {"Power": {"score": 0.5}}}\n',
     "line 2: field 'perception' is missing (--text-field)"),
    ("evidence", b'{"id": "p", "author": ["a1"], "perception": "x", "values": {"Power": {"score": 0.5}}}\n',
     "line 2: field 'author' must be a string, a number, a boolean or null to group by, got an array"),
])
def test_a_bad_line_names_the_file_the_line_and_the_field(invoke, tmp_path, which, line, expected):
    good_profile = {"id": "a1", "author": "a1", "n_perceptions": 1,
                    "values": {"Power": {"score": 0.5, "n": 1, "sd": None}}, "scorer": "s", "group_by": ["author"]}
    good_evidence = {"id": "p0", "author": "a1", "perception": "x", "values": {"Power": {"score": 0.5}}}
    (tmp_path / "profiles.jsonl").write_bytes(jsonl([good_profile]) + (line if which == "profiles" else b""))
    (tmp_path / "scored.jsonl").write_bytes(jsonl([good_evidence]) + (line if which == "evidence" else b""))
    out = tmp_path / "r.html"
    result = run_report(invoke, tmp_path, "--evidence", str(tmp_path / "scored.jsonl"), "-o", str(out))
    path = tmp_path / ("profiles.jsonl" if which == "profiles" else "scored.jsonl")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"gpv-report: error: {path}: {expected}\n"
    assert not out.exists()


def test_no_profiles_and_perceptions_given_as_profiles(invoke, tmp_path, files):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    result = run_report(invoke, tmp_path, profiles="empty.jsonl")
    assert (result.exit_code, result.stderr) == (1, f"gpv-report: error: {tmp_path / 'empty.jsonl'} holds no profile\n")
    result = run_report(invoke, tmp_path, profiles="scored.jsonl")
    assert result.exit_code == 1
    assert result.stderr == (f"gpv-report: error: {tmp_path / 'scored.jsonl'}: line 1: field 'n_perceptions' is "
                             "missing (gpv-report reads gpv-aggregate's profiles)\n")


def test_evidence_of_other_groups_and_error_records_are_counted(invoke, files):
    tmp_path, records, _ = files
    extra = [dict(records[0], id="x#c0#p0", author="nobody"), {"_gpv_error": {"line": 3, "error": "bad"}}]
    (tmp_path / "more.jsonl").write_bytes(jsonl(records + extra))
    result = run_report(invoke, tmp_path, "--evidence", str(tmp_path / "more.jsonl"))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "gpv-report: left out 1 error record from upstream in the evidence",
        "gpv-report: 1 of 91 evidence records belong to no profile's group; left out"]
    assert "91 perceptions read as evidence (90 in these groups)" in result.stdout
    assert "x#c0#p0" not in result.stdout


def test_png_charts(invoke, files):
    tmp_path, _, profiles = files
    charts = tmp_path / "charts" / "deep"
    result = run_report(invoke, tmp_path, "--png", str(charts))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # --png without -o: no HTML
    assert result.stderr == f"gpv-report: wrote 5 PNG charts to {charts}\n"
    names = sorted(p.name for p in charts.iterdir())
    assert names == ["circumplex.png", "compare.png", "profile-a1.png", "profile-a2.png", "profile-a3.png"]
    for path in charts.iterdir():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_png_needs_matplotlib(invoke, files, monkeypatch):
    tmp_path, _, _ = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = run_report(invoke, tmp_path, "--png", str(tmp_path / "charts"), "-o", str(tmp_path / "r.html"))
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "gpv-report: error: gpv-report --png needs matplotlib: pip install 'gpvtools[validate]'\n"
    assert not (tmp_path / "charts").exists() and not (tmp_path / "r.html").exists()


def test_the_real_entry_point_in_a_pipeline(files):
    tmp_path, _, _ = files
    help_ = subprocess.run(["gpv-report", "--help"], capture_output=True, text=True, check=True)
    assert help_.stdout.startswith("Usage: gpv-report [OPTIONS] [INPUT]")
    done = subprocess.run("gpv-aggregate -q --by author scored.jsonl | gzip | gpv-report --evidence scored.jsonl "
                          "--title Authors -o report.html", shell=True, cwd=tmp_path, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<h1>Authors</h1>" in page
    assert "gpv-report --evidence scored.jsonl --title Authors -o report.html" in page
