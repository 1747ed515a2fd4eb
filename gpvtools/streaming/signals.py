"""SIGINT and SIGTERM as an exception a command can unwind by (Interrupted), held back where a library
would swallow it, and remembered where native code drops it."""

import contextlib
import os
import signal
import threading


class Interrupted(Exception):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_pending = []  # the first SIGINT/SIGTERM of this command, kept in case its exception was swallowed
# Python functions that native code calls back while it computes (llama.cpp's log callback, which
# llama-cpp-python sets at import): an exception raised in one is printed by ctypes ("Exception ignored
# on calling ctypes callback function", with a traceback) and dropped, so a signal that lands there is
# only remembered, and check_interrupted() raises it at the next record.
NATIVE_CALLBACKS = ("llama_cpp/_logger.py",)


def _in_native_callback(frame, depth=4):
    while frame is not None and depth > 0:
        if frame.f_code.co_filename.replace(os.sep, "/").endswith(NATIVE_CALLBACKS):
            return True
        frame, depth = frame.f_back, depth - 1
    return False


def _raise_interrupted(signum, frame):
    if not _pending:
        _pending.append(signum)
    if _in_native_callback(frame):
        return
    raise Interrupted(signum)


def forget_interrupted():
    """The signal has been told (by the stage loop or the command boundary): do not raise it again."""
    _pending.clear()


def check_interrupted():
    """Raise Interrupted for a signal that came but whose exception never reached us.

    A signal handler raises in whatever Python code runs at that moment; when that is a ctypes callback
    (llama.cpp calls its Python log callback from inside a decode), ctypes prints "Exception ignored"
    and goes on, and without this the command would finish as if no signal had come. Called between
    records and at the command boundary.
    """
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def interruptible():
    """SIGINT and SIGTERM raise Interrupted in the main thread for the block, and are remembered.

    SIGINT is taken over only where Python's own handler has it (a SIGINT ignored by the parent, as for
    a background job, stays ignored).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_interrupted)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        old[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM back until the block ends, then deliver the first that came.

    For writes that a library does in native code with Python callbacks (torch.save): an exception
    raised inside one of them comes back as that library's own RuntimeError, not as an interruption,
    so the command would exit 1 with an error instead of 130/143 with "interrupted". Main thread only
    (signal handlers live there); elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came = []
    old = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if came:
            signal.raise_signal(came[0])
