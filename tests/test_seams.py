"""The seams between layers: the library knows nothing of click, one OpenAI client, backends from registries,
typed settings, and --help that keeps each backend's own options apart."""

import ast
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpvtools.commands import elicit, parse, score
from gpvtools.method.scoring.backends import SCORERS, OpenAISettings, ScorerSettings, pick_backend
from gpvtools.runtimes.chat import CHAT_MODELS, ChatSettings, pick_chat_backend
from gpvtools.runtimes.models import BUILTIN
from gpvtools.runtimes.server import ServerSettings, retry_after

PACKAGE = Path(__file__).resolve().parent.parent / "gpvtools"


def imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def library_files():
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] != "commands"]


def test_the_library_does_not_import_click():
    files = library_files()
    assert len(files) > 30  # the walk found the library
    users = [str(p.relative_to(PACKAGE)) for p in files
             if any(m == "click" or m.startswith("click.") for m in imported_modules(p))]
    assert users == []


def test_the_scan_sees_click_where_it_is():
    # The control: the commands do import click, and the scan finds it there.
    assert "click" in set(imported_modules(PACKAGE / "commands" / "score.py"))


def test_one_place_builds_an_openai_client():
    sites = []
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "OpenAI":
                sites.append(str(p.relative_to(PACKAGE)))
    assert sites == ["runtimes/server.py"]


def test_backend_choices_are_the_registries():
    def choices(command, name="backend"):
        option = next(p for p in command.params if p.name == name)
        return tuple(option.type.choices)

    assert choices(score.main) == ("auto", *SCORERS)
    assert set(SCORERS) == {"llama-cpp", "transformers", "openai", "dictionary"}
    assert choices(parse.main) == ("auto", *CHAT_MODELS, "sentences", "clauses")
    assert choices(elicit.main.commands["questions"]) == ("auto", *CHAT_MODELS)


@pytest.mark.parametrize("model, base_url, explicit, expected", [
    (BUILTIN, None, False, "llama-cpp"),
    ("m.gguf", "http://x/v1", True, "llama-cpp"),          # a local file decides by its kind
    ("lex.json", None, False, "dictionary"),
    ("words.DIC", None, False, "dictionary"),
    (BUILTIN, "http://x/v1", False, "llama-cpp"),          # OPENAI_BASE_URL alone keeps the built-in model local
    (BUILTIN, "http://x/v1", True, "openai"),              # --base-url on the command line
    ("served-model", "http://x/v1", False, "openai"),      # not a file here: a model on the server
    ("org/model", None, False, "transformers"),
])
def test_which_scorer_a_model_means(model, base_url, explicit, expected):
    settings = ScorerSettings(model=model,
                              backends={"openai": OpenAISettings(server=ServerSettings(base_url, explicit=explicit))})
    assert pick_backend(settings) == expected


@pytest.mark.parametrize("model, base_url, explicit, expected", [
    (BUILTIN, None, False, "llama-cpp"),
    (BUILTIN, "http://x/v1", False, "llama-cpp"),
    (BUILTIN, "http://x/v1", True, "openai"),
    ("m.gguf", None, False, "llama-cpp"),
    ("gpt-4o-mini", "http://x/v1", False, "openai"),
    ("gpt-4o-mini", None, False, "llama-cpp"),
])
def test_which_chat_model_a_model_means(model, base_url, explicit, expected):
    assert pick_chat_backend(ChatSettings(model=model, server=ServerSettings(base_url, explicit=explicit))) == expected


def test_settings_are_typed_and_the_key_stays_out_of_their_repr():
    settings = ServerSettings("http://x/v1", api_key="sk-secret")
    with pytest.raises(AttributeError):
        settings.retries = 9  # frozen: a built model's settings cannot drift
    assert "sk-secret" not in repr(settings) and "sk-secret" not in repr(ChatSettings(server=settings))


class Headers(dict):
    def get(self, key, default=None):
        return super().get(key.lower(), default)


class Response:
    def __init__(self, **headers):
        self.headers = Headers({k.lower().replace("_", "-"): v for k, v in headers.items()})


def test_retry_after_reads_seconds_milliseconds_and_dates():
    assert retry_after(None) is None
    assert retry_after(Response()) is None
    assert retry_after(Response(retry_after="3")) == 3.0
    assert retry_after(Response(retry_after_ms="250")) == 0.25
    assert retry_after(Response(retry_after="Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # a past date: no wait
    assert retry_after(Response(retry_after="soon")) is None  # unreadable: our own backoff decides


def test_help_lists_each_backends_options_under_its_name():
    out = CliRunner().invoke(score.main, ["--help"], terminal_width=100).output
    sections = {}
    current = None
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    assert {"Options", "llama-cpp options", "transformers options", "openai options"} <= set(sections)
    assert "--n-ctx" in sections["llama-cpp options"] and "--n-ctx" not in sections["Options"]
    assert "--load-in-4bit" in sections["transformers options"]
    assert "--retries" in sections["openai options"] and "--resume" in sections["Options"]
    # The heading says whose option it is, so the help text no longer does.
    assert "llama-cpp:" not in sections["llama-cpp options"]
