"""GPV_REQUIRE (tests/conftest.py, docs/development.md): a test that lacks a part of the system skips, naming
it, through require(PART, WHY); where GPV_REQUIRE asks for the part (.ci/run: all) it fails instead, and any
skip not made by require fails too. Each case runs pytest itself on a small test file, with the suite's
conftest as its plugin."""

import re
import subprocess
import sys

import pytest

from .conftest import ROOT, outside_env

CASES = '''
import pytest

from tests.conftest import require


def test_require_chromium():
    require("chromium", "chromium not found")


def test_require_slurm_present():
    require("slurm", None)


def test_require_cuda():
    require("cuda", "no CUDA GPU here")


def test_plain_skip():
    pytest.skip("for no stated part")


@pytest.mark.skipif(True, reason="a skipif mark")
def test_skipif():
    pass


def test_importorskip():
    pytest.importorskip("no_such_module_gpvtools")


@pytest.mark.xfail(reason="expected", strict=True)
def test_xfail():
    assert False
'''


def run_cases(tmp_path, required):
    """pytest -rA on CASES with GPV_REQUIRE=REQUIRED (unset for None): (the finished process, {test: outcome}
    from the short summary, the summary's SKIPPED lines, which name a file and line rather than a test)."""
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = outside_env(**({} if required is None else {"GPV_REQUIRE": required}))
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-rA", "-q", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
                           str(tmp_path / "test_cases.py")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    got = {}
    for line in done.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|XFAIL|ERROR) \S*::test_(\w+)", line)
        if m:
            got[m.group(2)] = m.group(1)
    return done, got, [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]


def test_without_gpv_require_every_missing_part_skips_and_says_which(tmp_path):
    done, got, skipped = run_cases(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert got == {"require_slurm_present": "PASSED", "xfail": "XFAIL"}, done.stdout
    assert len(skipped) == 5, done.stdout
    reasons = "\n".join(skipped)
    assert "chromium not here: chromium not found" in reasons and "cuda not here: no CUDA GPU here" in reasons


@pytest.mark.parametrize("required", ["all", "chromium,slurm"])
def test_under_gpv_require_a_required_part_and_every_other_skip_fail(tmp_path, required):
    done, got, skipped = run_cases(tmp_path, required)
    assert done.returncode == 1, done.stdout + done.stderr
    assert got == {"require_chromium": "FAILED", "require_slurm_present": "PASSED", "plain_skip": "FAILED",
                   "skipif": "ERROR", "importorskip": "FAILED", "xfail": "XFAIL"}, done.stdout
    # cuda is not in all, nor named: the one skip left, and it says why
    assert len(skipped) == 1 and "cuda not here: no CUDA GPU here" in skipped[0], done.stdout
    assert f"chromium is missing, and GPV_REQUIRE={required} requires it: chromium not found" in done.stdout
    assert "skipped (for no stated part), and GPV_REQUIRE" in done.stdout
    assert "skipped (a skipif mark), and GPV_REQUIRE" in done.stdout


def test_a_part_named_outside_all_is_required_too(tmp_path):
    done, got, skipped = run_cases(tmp_path, "all,cuda")
    assert got["require_cuda"] == "FAILED" and skipped == [], done.stdout
    assert "cuda is missing, and GPV_REQUIRE=all,cuda requires it: no CUDA GPU here" in done.stdout


def test_an_unknown_part_is_a_usage_error(tmp_path):
    done, _, _ = run_cases(tmp_path, "all,chromeum")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "GPV_REQUIRE=all,chromeum: chromeum not among the parts" in done.stdout + done.stderr


def test_ci_requires_every_part():
    """.ci/run sets GPV_REQUIRE=all before it runs `make test` (as the README gives it), and make test lists
    the reasons of the skips that remain."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^export GPV_REQUIRE=all$", ci, re.M) and re.search(r"^make test$", ci, re.M)
    assert ci.index("export GPV_REQUIRE=all") < ci.index("\nmake test\n")
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\n\t\$\(BIN\)/python -m pytest -q -rs$", make, re.M)
