"""Man pages are generated from the commands; a stale one fails here."""

from pathlib import Path

import tomllib

from gpvtools.commands import manpages
from tests.conftest import ROOT


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def console_scripts():
    return pyproject()["project"]["scripts"]


def test_committed_man_pages_are_current(tmp_path):
    manpages.write_pages(tmp_path)
    for page in sorted(tmp_path.iterdir()):
        committed = ROOT / "man" / page.name
        assert committed.exists(), f"{page.name} missing: run `make man`"
        assert committed.read_text() == page.read_text(), f"man/{page.name} is stale: run `make man`"


def test_every_command_has_help_a_man_page_and_a_shim():
    scripts = console_scripts()
    commands = {manpages.command(name).name for name in manpages.COMMANDS}
    assert set(scripts) == commands
    for name in scripts:
        cmd = manpages.command(name.removeprefix("gpv-"))
        assert cmd.help and len(manpages.summary(cmd)) > 10
        assert (ROOT / "man" / f"{name}.1").exists()
        assert (ROOT / "bin" / name).exists()
    setuptools = pyproject()["tool"]["setuptools"]
    installed = list(scripts) + [Path(f).name for f in setuptools.get("script-files", [])]  # and shell helpers
    assert sorted(setuptools["data-files"]["share/man/man1"]) == sorted(f"man/{n}.1" for n in installed)


def test_shell_helpers_in_bin_have_a_handwritten_man_page():
    """bin/ holds the console scripts' shims and any shell helpers; a helper's page is written by hand."""
    import shutil
    import subprocess


    helpers = sorted(p.name for p in (ROOT / "bin").iterdir() if p.name not in console_scripts())
    assert sorted(pyproject()["tool"]["setuptools"].get("script-files", [])) == [f"bin/{name}" for name in helpers]
    for name in helpers:
        page = ROOT / "man" / f"{name}.1"
        assert page.exists(), f"bin/{name} has no man/{name}.1"
        assert page.read_text().splitlines()[2].startswith(name.replace("-", "\\-") + " \\- ")
    # Not a skip: .ci/run installs groff, and a check that silently does not run checks nothing.
    assert shutil.which("groff"), "groff is not installed (Debian: apt-get install groff-base)"
    for name in helpers:
        page = ROOT / "man" / f"{name}.1"
        done = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr


def test_every_shim_in_bin_names_its_command_and_exits_2_on_a_usage_error():
    # bin/gpv-X runs `python3 -m gpvtools.commands.X`: --help must still say gpv-X, not "python -m …"
    import os
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for name in manpages.COMMANDS:
        done = subprocess.run([str(ROOT / "bin" / f"gpv-{name}"), "--help"], capture_output=True, env=env)
        assert done.returncode == 0 and done.stdout.startswith(f"Usage: gpv-{name} ".encode()), done.stdout[:80]
    # an option check made once the options are read is a usage error too (it was exit 1, "UsageError: …")
    done = subprocess.run([str(ROOT / "bin" / "gpv-chunk"), "--overlap", "500", "-n", "10"], input=b"",
                          capture_output=True, env=env)
    assert (done.returncode, done.stderr) == (2, b"gpv-chunk: error: --overlap in tokens must be below --max-tokens\n")


def rendered(page):
    """PAGE as man(1) shows it (groff reading UTF-8, no bold or underline), with groff's typographic
    hyphens, minus signs and quotes read back as the ASCII a user types."""
    import shutil
    import subprocess

    assert shutil.which("groff"), "groff is not installed (Debian: apt-get install groff-base)"
    done = subprocess.run(["groff", "-man", "-Kutf8", "-Tutf8", "-P-cbou", str(page)],
                          capture_output=True, text=True)
    # a word too long for the line (a URL, a path) is set as it is, with a warning: nothing else may be said
    problems = [line for line in done.stderr.splitlines() if not line.endswith("cannot adjust line")]
    assert (done.returncode, problems) == (0, []), done.stderr
    return done.stdout.translate(str.maketrans("\u2010\u2212\u2018\u2019", "--''"))


def section(text, title):
    """The lines of a rendered page's section TITLE (a line of its own at column 0) up to the next one."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if lines[i][:1].isalpha()), len(lines))
    return [line.strip() for line in lines[start:end] if line.strip()]


def test_every_page_renders_its_examples_one_a_line():
    # EXAMPLES written as "\\b\\n…" once showed `\b\ngpv-score …\ngpv-score -m …` as one run-on paragraph.
    for name in manpages.COMMANDS:
        cmd = manpages.command(name)
        text = rendered(ROOT / "man" / f"{cmd.name}.1")
        assert "\\b" not in text and "\\n" not in text, f"{cmd.name}.1 shows a literal \\b or \\n"
        examples = dict(getattr(cmd, "man_sections", {})).get("EXAMPLES")
        if examples is None:
            continue
        assert examples.startswith("\b\n"), f"{cmd.name}'s EXAMPLES would be filled into one paragraph"
        wanted = [line.strip() for line in examples[2:].strip().split("\n") if line.strip()]
        shown = section(text, "EXAMPLES")
        assert shown == wanted, f"{cmd.name}.1's EXAMPLES:\n" + "\n".join(shown)
        assert sum(line.startswith(cmd.name + " ") for line in shown) >= 1
