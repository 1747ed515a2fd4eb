"""Man pages are generated from the commands; a stale one fails here."""

import tomllib
from pathlib import Path

from gpvtools.commands import manpages
from tests.conftest import ROOT


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def console_scripts():
    return pyproject()["project"]["scripts"]


def test_committed_man_pages_are_current(tmp_path):
    manpages.write_all(tmp_path)
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
