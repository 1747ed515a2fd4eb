"""Shared fixtures. The data sets live in ../shared beside the checkout (never in the package)."""

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"  # a hub lookup would hang ~48 s without network
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Subprocess tests run the installed entry points (gpv-chunk, …) of the Python running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GPV_SHARED", ROOT.parent / "shared"))
POSTS = SHARED / "data" / "blogs" / "posts-dev.jsonl"


@pytest.fixture(scope="session")
def posts_path():
    if not POSTS.exists():
        pytest.fail(f"{POSTS} is missing: the tests need ../shared beside the checkout (or GPV_SHARED)")
    return POSTS


@pytest.fixture
def invoke():
    """Run a click command in-process; stdout and stderr come back separately."""

    def run(command, args, input=b""):
        if isinstance(input, str):
            input = input.encode()
        return CliRunner().invoke(command, args, input=input, catch_exceptions=False)

    return run
