"""Loading GGUF models with llama-cpp-python: checked paths and a quiet stderr."""

import contextlib
import ctypes
import os
import sys

from ..streaming.errors import GpvError, MissingDependency

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


def dequantized(path):
    """An F32 copy of the GGUF at PATH (its quantized weights dequantized), made once and kept in the cache.

    llama.cpp multiplies quantized weights by activations it quantizes to 8 bits; on the F32 copy it computes
    in float32, as transformers does after dequantizing the same file, so the two backends give the same
    numbers up to rounding. The copy lives in $GPV_CACHE_DIR/models, keyed by the source's path, size and
    modification time; it is written to a temporary file and renamed, so a killed run leaves no half file
    under the final name (and the next run removes the killed run's temporary file).
    """
    import hashlib
    from pathlib import Path

    from ..streaming.atomic import atomic_path
    from .cache import default_dir

    try:
        import llama_cpp
    except ImportError:
        raise MissingDependency("a GGUF model", "llama-cpp-python", "cpu") from None
    check_gguf(path)
    source = Path(path).resolve()
    stat = source.stat()
    key = hashlib.sha256(f"{source}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    directory = default_dir() / "models"
    target = directory / f"{source.stem}.{key}.f32.gguf"
    if target.is_file():
        return str(target)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise GpvError(f"cannot create {directory} for the float32 copy of {path}: {e.strerror}") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    params.nthread = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    with atomic_path(target, perms=0o600) as temp:
        with quiet_stderr():
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(temp).encode(), ctypes.byref(params))
        if status != 0:
            raise GpvError(f"model {path}: llama.cpp could not dequantize it to float32 (status {status})")
    return str(target)
