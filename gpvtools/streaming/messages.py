"""What a command says on stderr: notes ("COMMAND: MESSAGE"), counts in words, and the progress line."""

import sys
import time


def plural(n, word, words=None):
    return f"{n} {word if n == 1 else words or word + 's'}"


def note(command, message):
    """One line on stderr, "COMMAND: MESSAGE"; what the terminal cannot encode is escaped, not fatal."""
    line = f"{command}: {message}\n"
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr.write(line.encode(encoding, "backslashreplace").decode(encoding, "replace"))
    sys.stderr.flush()


class Progress:
    """A one-line counter on stderr, redrawn at most 4 times a second, only on a terminal."""

    def __init__(self, command, enabled):
        self.command, self.enabled, self.last = command, enabled, 0.0

    def update(self, n_in, n_out):
        now = time.monotonic()
        if self.enabled and now - self.last > 0.25:
            self.last = now
            sys.stderr.write(f"\r{self.command}: {n_in} in, {n_out} out")
            sys.stderr.flush()

    def close(self):
        if self.enabled and self.last:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
