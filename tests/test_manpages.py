"""Man pages are generated from the commands; a stale one fails here."""

import tomllib

from gpvtools import manpages
from tests.conftest import ROOT


def console_scripts():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


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
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert sorted(data_files["share/man/man1"]) == sorted(f"man/{n}.1" for n in scripts)
