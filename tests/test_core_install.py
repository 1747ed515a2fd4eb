"""A core install works: `pip install gpvtools` with only the core dependencies runs every stage that needs no
extra, and a command that needs one says which in one line.

A real virtual environment, not an import hook over the test's own: a hook blocks only the names it lists,
while a fresh environment also catches a module that some extra pulled in by the way (tqdm, tokenizers,
huggingface_hub …), a file missing from the wheel, and a broken entry point. The core dependencies
pyproject.toml names and its build backend come from the package index pip is configured with; then the
package is built and installed from a copy of the source tree (a build in place would write build/ into the
checkout), with no index. Built once a session.
"""

import os
import shutil
import subprocess
import sys

import orjson
import pytest
import tomllib

from .conftest import ROOT, require

COMMANDS = ("gpv-chunk", "gpv-parse", "gpv-score", "gpv-train", "gpv-aggregate", "gpv-validate", "gpv-elicit",
            "gpv-report", "gpv-cron", "gpv-slurm")
HEAVY = ("numpy", "torch", "transformers", "llama_cpp", "sklearn", "scipy", "matplotlib")
LEXICON = {"Benevolence": ["family", "help*"], "Power": ["power", "control*"]}
DOCS = [{"id": "d1", "author": "x", "text": "I help my family every day. Power means little to me."},
        {"id": "d2", "author": "y", "text": "Control is what I want. I seek power over others."}]

pytestmark = pytest.mark.slow


def _source_copy(dest):
    """What the wheel is built from, without build outputs, caches or virtual environments."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("gpvtools", "bin", "man"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="session")
def core(tmp_path_factory):
    """The bin directory of a fresh environment holding gpvtools and its core dependencies only.

    What comes from the package index (the core dependencies, and the build backend pyproject.toml names) is
    installed first: where the index cannot be reached the tests skip, naming it (they fail under GPV_REQUIRE,
    as in CI). This project's own source is then built and installed with nothing more from any index, so a
    failure there is the project's (a broken pyproject.toml, a file missing from the package) and fails the
    tests everywhere."""
    base = tmp_path_factory.mktemp("core-install")
    venv = base / "venv"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    deps, backend = project["project"]["dependencies"], project["build-system"]["requires"]
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    fetched = subprocess.run([*pip, *backend, *deps], capture_output=True, text=True)
    if fetched.returncode:
        require("index", f"cannot install the core dependencies and the build backend ({' '.join(backend + deps)}) "
                         f"from the package index: {fetched.stderr.strip()[-500:]}")
    built = subprocess.run([*pip, "--no-deps", "--no-build-isolation", "--no-index", str(_source_copy(base / "src"))],
                           capture_output=True, text=True)
    assert built.returncode == 0, f"pip cannot install this project's own source: {built.stderr.strip()[-2000:]}"
    listed = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print([m for m in "
                             f"{HEAVY!r} if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == "[]", f"an extra came along with the core dependencies: {listed.stdout}"
    return venv / "bin"


def run(core, tmp_path, argv, data=b""):
    env = {"PATH": f"{core}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "GPV_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(core / argv[0]), *argv[1:]], input=data, capture_output=True, env=env,
                          cwd=tmp_path, timeout=120)


def ok(result):
    err = result.stderr.decode()
    assert result.returncode == 0 and "Traceback" not in err, err
    return result.stdout


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(core, tmp_path, command):
    assert ok(run(core, tmp_path, [command, "--help"])).startswith(f"Usage: {command}".encode())


def test_gpv_validate_checks_help(core, tmp_path):
    for check in ("stability", "construct", "concurrent", "predictive", "accuracy", "probe"):
        assert ok(run(core, tmp_path, ["gpv-validate", check, "--help"])).startswith(b"Usage: gpv-validate")


def test_the_pipeline_with_core_backends(core, tmp_path):
    (tmp_path / "lexicon.json").write_bytes(orjson.dumps(LEXICON))
    chunks = ok(run(core, tmp_path, ["gpv-chunk", "-q", "-t", "words"], jsonl(DOCS)))
    perceptions = ok(run(core, tmp_path, ["gpv-parse", "-q", "--backend", "sentences"], chunks))
    scored = ok(run(core, tmp_path, ["gpv-score", "-q", "-m", "lexicon.json"], perceptions))
    groups = [orjson.loads(line) for line in ok(run(core, tmp_path, ["gpv-aggregate", "-q", "--by", "author"],
                                                    scored)).splitlines()]
    assert [(g["id"], g["n_perceptions"]) for g in groups] == [("x", 2), ("y", 2)]
    assert groups[1]["values"]["Power"]["n"] == 2 and groups[1]["values"]["Power"]["score"] > 0
    tables = ok(run(core, tmp_path, ["gpv-aggregate", "-q", "--by", "author", "-f", "csv", "-o", "x.csv"], scored))
    assert tables == b"" and (tmp_path / "x.csv").read_bytes().startswith(b"id,author,n_perceptions,scorer,")


def one_line_naming_an_extra(result, command):
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith(f"{command}: error: "), err
    assert "pip install 'gpvtools[" in err, err
    return err


def test_the_built_in_model_needs_the_cpu_extra(core, tmp_path):
    perception = jsonl([{"id": "p", "perception": "I help my family."}])
    err = one_line_naming_an_extra(run(core, tmp_path, ["gpv-score", "-q"], perception), "gpv-score")
    assert err.endswith("pip install 'gpvtools[cpu]'\n")


def test_the_transformers_backend_needs_the_cuda_extra(core, tmp_path):
    perception = jsonl([{"id": "p", "perception": "I help my family."}])
    err = one_line_naming_an_extra(run(core, tmp_path, ["gpv-score", "-q", "-b", "transformers"], perception),
                                   "gpv-score")
    assert err.endswith("pip install 'gpvtools[cuda]'\n")


def test_training_needs_the_cuda_extra_after_the_data_is_checked(core, tmp_path):
    rows = ["situation,vrd,text,label", "Helping a stranger,Value,Kindness,Yes", "Helping a stranger,Value,Wealth,No",
            "Helping a stranger,Value,Kindness,Supports", "Lying to a friend,Value,Honesty,Opposes"]
    (tmp_path / "prism.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    bad = run(core, tmp_path, ["gpv-train", "-q", "--holdout", "0", "-o", "out", "nope.csv"])
    assert bad.returncode == 1 and b"nope.csv" in bad.stderr and b"Traceback" not in bad.stderr
    err = one_line_naming_an_extra(run(core, tmp_path, ["gpv-train", "-q", "--holdout", "0", "-o", "out",
                                                        "prism.csv"]), "gpv-train")
    assert err.endswith("pip install 'gpvtools[cuda]'\n")
    assert (tmp_path / "out" / "split.json").is_file()  # the data was read and split before the model was needed


def test_a_validity_check_needs_the_validate_extra(core, tmp_path):
    scored = jsonl([{"id": f"p{i}", "doc_id": f"d{i % 3}", "scorer": "x:y",
                     "values": {"A": {"score": 0.5}, "B": {"score": -0.5}}} for i in range(6)])
    err = one_line_naming_an_extra(run(core, tmp_path, ["gpv-validate", "stability"], scored),
                                   "gpv-validate stability")
    assert err.endswith("pip install 'gpvtools[validate]'\n")


def test_report_charts_need_the_validate_extra(core, tmp_path):
    profile = jsonl([{"id": "x", "author": "x", "n_perceptions": 1, "scorer": "x:y", "group_by": ["author"],
                      "values": {"A": {"score": 0.5, "n": 1, "sd": None}}}])
    assert ok(run(core, tmp_path, ["gpv-report", "-q"], profile)).startswith(b"<!DOCTYPE html>")
    err = one_line_naming_an_extra(run(core, tmp_path, ["gpv-report", "--png", "charts"], profile), "gpv-report")
    assert err.endswith("pip install 'gpvtools[validate]'\n")
