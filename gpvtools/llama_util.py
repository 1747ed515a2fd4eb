"""Loading GGUF models with llama-cpp-python: checked paths and a quiet stderr."""

import contextlib
import os
import sys

from .errors import GpvError, MissingDependency

GGUF_MAGIC = b"GGUF"


def check_gguf(path):
    """Raise GpvError unless PATH is a readable GGUF file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except IsADirectoryError:
        raise GpvError(f"model {path} is a directory, not a GGUF file") from None
    except OSError as e:
        raise GpvError(f"model {path}: {e.strerror}") from None
    if magic != GGUF_MAGIC:
        raise GpvError(f"model {path} is not a GGUF file")


def load_llama(path, **kwargs):
    """A llama_cpp.Llama for PATH, with llama.cpp's own logging off."""
    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency("a GGUF model", "llama-cpp-python", "cpu") from None
    check_gguf(path)
    try:
        with quiet_stderr():
            return llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)
    except (ValueError, RuntimeError) as e:
        raise GpvError(f"model {path}: llama.cpp cannot load it: {e}") from None


@contextlib.contextmanager
def quiet_stderr():
    """Silence what llama.cpp's C code prints to fd 2 while loading (it ignores verbose=False there)."""
    if os.environ.get("GPV_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
