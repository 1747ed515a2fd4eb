"""The behaviour every stage shares (STYLE.md): run against each command that exists."""

import gzip

import orjson
import pytest

from gpvtools.commands import aggregate, chunk, parse, score
from gpvtools.runtimes.models import builtin_gguf

GOOD = b'{"id": "d1", "text": "Honesty matters to me."}'
SCORED = b'{"id": "d1", "values": {"Power": {"relevance": 0.9, "score": 0.5}}, "scorer": "x:y"}'
# (command, extra args that make it fast and offline, a valid input line)
STAGES = [
    pytest.param((chunk.main, ["-t", "words"], GOOD), id="gpv-chunk"),
    pytest.param((parse.main, ["--backend", "sentences"], GOOD), id="gpv-parse"),
    pytest.param((score.main, ["-m", builtin_gguf(), "--values", "Benevolence,Power", "--text-field", "text"], GOOD),
                 id="gpv-score"),
    pytest.param((aggregate.main, [], SCORED), id="gpv-aggregate"),
]
# What differs between stages: the field a record must have and its type; whether records stream out
# one by one (gpv-aggregate writes its groups at the end, all or nothing); the summary a run ends with.
REQUIRED = {"gpv-chunk": ("text", "a string"), "gpv-parse": ("text", "a string"), "gpv-score": ("text", "a string"), "gpv-aggregate": ("values", "an object")}
STREAMS = {"gpv-chunk": True, "gpv-parse": True, "gpv-score": True, "gpv-aggregate": False}
SUMMARY = {
    "gpv-aggregate": lambda n_in, n_groups: [f"gpv-aggregate: aggregated {n_in} records into {n_groups} groups"],
    "gpv-parse": lambda n_in, _: [
        "gpv-parse: note: no LLM parsed the text: the perceptions are the chunks' sentences as they stand "
        "(--backend sentences; -m or --base-url parses with a model)",
        f"gpv-parse: {n_in} chunks parsed into {n_in} perceptions; 0 without any"],
}


def summary(command, n_in, n_groups):
    return SUMMARY[command.name](n_in, n_groups) if command.name in SUMMARY else []


@pytest.fixture(params=STAGES)
def stage(request):
    return request.param


def test_help(stage, invoke):
    command, _, _ = stage
    for flag in ("-h", "--help"):
        result = invoke(command, [flag])
        assert result.exit_code == 0
        assert result.stdout.startswith(f"Usage: {command.name} [OPTIONS] [INPUT]")


def test_empty_input_gives_empty_output(stage, invoke):
    command, args, _ = stage
    result = invoke(command, args)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("bad, message", [
    (b"not json", "line 2: invalid JSON: invalid literal, expected 'null' at column 1"),
    (b'{"text": "\xff"}', "line 2: invalid UTF-8 at byte 11"),
    (b'{"id": "d2"}', "line 2: field '{field}' is missing"),
    (b'{"id": "d2", "{field}": ["a"]}', "line 2: field '{field}' must be {kind}, got an array"),
    (b"[]", "line 2: expected a JSON object, got an array"),
    (b"", "line 2: empty line"),
])
def test_bad_line_fails_with_line_and_field(stage, invoke, bad, message):
    command, args, good = stage
    field, kind = REQUIRED[command.name]
    bad = bad.replace(b"{field}", field.encode())
    result = invoke(command, args, good + b"\n" + bad + b"\n" + good + b"\n")
    assert result.exit_code == 1
    assert result.stderr == f"{command.name}: error: {message.format(field=field, kind=kind)}\n"
    if STREAMS[command.name]:
        # the good line before the bad one was written and flushed, nothing after it
        assert len(result.stdout.splitlines()) >= 1
        assert all(orjson.loads(line)["id"].startswith("d1") for line in result.stdout.splitlines())
    else:
        assert result.stdout == ""


def test_skip_reports_each_bad_line_and_keeps_the_good(stage, invoke):
    command, args, good = stage
    data = good + b"\n{oops\n" + good.replace(b"d1", b"d3") + b"\n[1]\n"
    result = invoke(command, args + ["--on-error", "skip"], data)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{command.name}: error: line 2: invalid JSON: unexpected character, expected a string key at column 2",
        f"{command.name}: error: line 4: expected a JSON object, got an array",
        f"{command.name}: 2 bad lines skipped",
        *summary(command, 2, 2),
    ]
    ids = {orjson.loads(line)["id"].split("#")[0] for line in result.stdout.splitlines()}
    assert ids == {"d1", "d3"}


def test_emit_passes_the_bad_record_on_with_its_fields(stage, invoke):
    command, args, good = stage
    result = invoke(command, args + ["--on-error", "emit"], good + b'\n{"id": "d9", "author": "x"}\n')
    assert result.exit_code == 1
    errors = [r for r in map(orjson.loads, result.stdout.splitlines()) if "_gpv_error" in r]
    assert errors == [{"id": "d9", "author": "x", "_gpv_error": {
        "command": command.name, "line": 2, "error": f"field '{REQUIRED[command.name][0]}' is missing"}}]


def test_error_records_from_upstream_pass_through(stage, invoke):
    command, args, good = stage
    upstream = {"id": "u", "_gpv_error": {"command": "gpv-x", "line": 1, "error": "boom"}}
    result = invoke(command, args, orjson.dumps(upstream) + b"\n" + good + b"\n")
    assert result.exit_code == 0
    assert orjson.loads(result.stdout.splitlines()[0]) == upstream
    assert "passed on 1 error record from upstream" in result.stderr


def test_gzip_on_stdin(stage, invoke):
    command, args, good = stage
    plain = invoke(command, args, good + b"\n")
    zipped = invoke(command, args, gzip.compress(good + b"\n"))
    assert zipped.exit_code == 0 and zipped.stdout == plain.stdout != ""


def test_missing_input_file(stage, invoke, tmp_path):
    command, args, _ = stage
    result = invoke(command, args + [str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1
    assert result.stderr == f"{command.name}: error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory\n"


def test_huge_line_is_reported_not_loaded(stage, invoke):
    command, args, good = stage
    huge = b'{"text": "' + b"a " * (25 * 1024 * 1024) + b'"}'  # 50 MB
    result = invoke(command, args + ["--on-error", "skip"], huge + b"\n" + good + b"\n")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"{command.name}: error: line 1: line is {len(huge)} bytes, over the limit of 16777216 (--max-line-bytes)")
    assert result.stdout.count("\n") >= 1


def test_resume_needs_an_output_file(stage, invoke):
    command, args, good = stage
    result = invoke(command, args + ["--resume"], good)
    assert result.exit_code == 2
    assert result.stderr == f"{command.name}: error: --resume needs -o FILE\n"


@pytest.mark.parametrize("spec", ["2/2", "a/b", "1", "-1/3"])
def test_bad_shard_is_a_usage_error(stage, invoke, spec):
    command, args, good = stage
    result = invoke(command, args + ["--shard", spec], good)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{command.name}: error: --shard")


def test_signals_held_until_a_write_ends():
    """A SIGTERM that lands inside torch.save's Python write callback came back as torch's RuntimeError
    (gpv-train exited 1, not 143, in a CI run): the checkpoint write holds signals and delivers them after."""
    import os
    import signal

    from gpvtools.streaming.signals import Interrupted, _pending, _raise_interrupted, signals_held

    old = signal.signal(signal.SIGTERM, _raise_interrupted)
    finished = []
    try:
        with pytest.raises(Interrupted):
            with signals_held():
                os.kill(os.getpid(), signal.SIGTERM)
                sum(range(10_000))  # bytecode boundaries, where a Python handler would run
                finished.append(True)
        assert finished == [True]
        assert signal.getsignal(signal.SIGTERM) is _raise_interrupted
    finally:
        signal.signal(signal.SIGTERM, old)
        _pending.clear()


@pytest.fixture
def python_sigint():
    """SIGINT with Python's own handler, as in a shell's foreground job, whatever the test run inherited: a run
    started in the background by a non-interactive shell (`.ci/run &`) has SIGINT ignored, and a command
    leaves an ignored SIGINT ignored (test_an_ignored_sigint_stays_ignored)."""
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_an_ignored_sigint_stays_ignored(capsys):
    """A background job's SIGINT is ignored by its shell, and the command keeps it so: Ctrl-C at the terminal
    is not for it. The signal does nothing and the command finishes."""
    import os
    import signal

    from gpvtools.streaming.signals import _pending
    from gpvtools.streaming.stage import guarded

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        def work():
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(10_000))
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            return 0

        with pytest.raises(SystemExit) as e:
            guarded("gpv-test", False, work)
        assert e.value.code == 0 and capsys.readouterr().err == ""
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
        _pending.clear()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the one ctypes drops, on purpose
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_swallowed_by_a_native_callback_still_interrupts(signame, capsys, python_sigint):
    """llama.cpp calls its Python log callback from inside a decode; a SIGINT that landed there raised in
    the callback, ctypes printed "Exception ignored" and gpv-score scored on and exited 0 (a CI run). The
    signal is remembered and ends the command at the next check, with 128 + signum."""
    import ctypes
    import os
    import signal

    from gpvtools.streaming.signals import _pending
    from gpvtools.streaming.stage import guarded

    signum = getattr(signal, signame)
    callback = ctypes.CFUNCTYPE(None)(lambda: (os.kill(os.getpid(), signum), sum(range(10_000))))
    done = []

    def work():
        callback()  # the handler's exception is raised, and dropped, inside the callback
        done.append(True)
        return 0

    with pytest.raises(SystemExit) as e:
        guarded("gpv-test", False, work)
    assert done == [True]  # the exception really was swallowed: work went on
    assert e.value.code == 128 + signum
    assert capsys.readouterr().err.endswith("gpv-test: interrupted\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _pending.clear()


@pytest.mark.parametrize("how", ["finished", "bad line", "interrupted"])
def test_the_stage_is_closed_once_its_run_ends(how, tmp_path, capsys):
    """run_command frees what the stage holds (its model) itself, however the run ends, instead of leaving it to
    the interpreter's exit: there llama.cpp's model, LoRA adapter and batch contexts were freed in the garbage
    collector's order, and a finished gpv-score crashed now and then (munmap_chunk: invalid pointer)."""
    import os
    import signal

    from gpvtools.streaming.signals import _pending
    from gpvtools.streaming.stage import Stage, StreamOptions, run_command

    events = []

    class Probe(Stage):
        command = "gpv-test"

        def process(self, entry):
            if how == "interrupted":
                os.kill(os.getpid(), signal.SIGTERM)
            events.append("record")
            return [{"id": entry.key}]

        def close(self):
            events.append("closed")

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n' + (b"{torn\n" if how == "bad line" else b""))
    opts = StreamOptions(input=str(path), output=str(tmp_path / "out.jsonl"), resume=False, on_error="fail",
                         shard=None, max_line_bytes=1 << 20, quiet=True, verbose=False)
    with pytest.raises(SystemExit) as e:
        run_command("gpv-test", Probe, opts)
    _pending.clear()
    assert e.value.code == {"finished": 0, "bad line": 1, "interrupted": 143}[how]
    # Interrupted, the signal's exception came inside process(), before its record.
    assert events == (["closed"] if how == "interrupted" else ["record", "closed"])
    err = capsys.readouterr().err
    assert err.count("interrupted") == (1 if how == "interrupted" else 0)  # said once, not again at the boundary


def test_a_signal_in_llama_cpps_log_callback_is_kept_for_the_next_record(capsys, monkeypatch, python_sigint):
    """A signal that lands in llama-cpp-python's log callback (which llama.cpp calls from inside a decode) is not
    raised there, where ctypes would print "Exception ignored … Traceback" and drop it (a CI run's stderr): it
    is remembered and ends the command at the next check, with one "interrupted" line and nothing else."""
    import ctypes
    import os
    import signal
    import sys

    from gpvtools.streaming.signals import _pending
    from gpvtools.streaming.stage import guarded

    scope = {"os": os, "signal": signal}
    source = "def callback():\n    os.kill(os.getpid(), signal.SIGINT)\n    sum(range(10_000))\n"
    exec(compile(source, "/site-packages/llama_cpp/_logger.py", "exec"), scope)
    callback = ctypes.CFUNCTYPE(None)(scope["callback"])
    dropped = []  # what ctypes would print as "Exception ignored on calling ctypes callback function"
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    done = []

    def work():
        callback()
        done.append(True)
        return 0

    with pytest.raises(SystemExit) as e:
        guarded("gpv-test", False, work)
    _pending.clear()
    assert dropped == []
    assert done == [True] and e.value.code == 130
    assert capsys.readouterr().err == "gpv-test: interrupted\n"
