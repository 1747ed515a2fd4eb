"""Library errors; commands turn them into messages and exit codes at their boundary."""


class GpvError(Exception):
    """A runtime problem the user can act on (exit status 1)."""


class UsageError(GpvError):
    """A bad combination of options or arguments (exit status 2)."""


class BadRecord(GpvError):
    """One input line is unusable; `line` is its 1-based number in the input."""

    def __init__(self, message, line=None, record=None):
        super().__init__(message)
        self.message = message
        self.line = line
        self.record = record

    def __str__(self):
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class MissingDependency(GpvError):
    """An optional library is not installed; says what to install."""

    def __init__(self, what, package, extra):
        super().__init__(f"{what} needs {package}: pip install 'gpvtools[{extra}]'")
