import gzip
import io

import pytest

from gpvtools.streaming.errors import BadRecord
from gpvtools.streaming.jsonl import TooLong, iter_lines, open_input, parse_line, require_text


def lines(data, limit=100):
    return list(iter_lines(io.BytesIO(data), limit))


def test_framing_keeps_line_numbers_and_strips_newlines():
    assert lines(b'{"a":1}\r\n\n{"b":2}') == [(1, b'{"a":1}'), (2, b""), (3, b'{"b":2}')]


def test_a_line_over_the_limit_is_measured_not_held():
    out = lines(b"x" * 250 + b"\n" + b'{"ok":1}\n', limit=100)
    assert isinstance(out[0][1], TooLong) and out[0][1].size == 250
    assert out[1] == (2, b'{"ok":1}')


def test_a_line_of_exactly_the_limit_is_fine():
    assert lines(b"y" * 100 + b"\n", limit=100) == [(1, b"y" * 100)]
    assert lines(b"y" * 100, limit=100) == [(1, b"y" * 100)]
    assert isinstance(lines(b"y" * 101, limit=100)[0][1], TooLong)


@pytest.mark.parametrize("raw, message", [
    (b"", "empty line"),
    (b"   ", "empty line"),
    (b"[1, 2]", "expected a JSON object, got an array"),
    (b'"text"', "expected a JSON object, got a string"),
    (b"3.5", "expected a JSON object, got a number"),
    (b"null", "expected a JSON object, got null"),
    (b"true", "expected a JSON object, got true"),
    (b'{"text": "caf\xe9"}', "invalid UTF-8 at byte 14"),
    (b'{"text": ', "invalid JSON: unexpected end of data at column 10"),
    (b"[" * 2000 + b"]" * 2000, "invalid JSON: depth limit exceeded at column 1026"),
])
def test_bad_lines_say_what_is_wrong(raw, message):
    with pytest.raises(BadRecord) as e:
        parse_line(raw, 7)
    assert str(e.value) == f"line 7: {message}"


def test_too_long_line_names_the_option():
    with pytest.raises(BadRecord) as e:
        parse_line(TooLong(52_428_800), 3, max_bytes=16)
    assert str(e.value) == "line 3: line is 52428800 bytes, over the limit of 16 (--max-line-bytes)"


def test_text_field_checks():
    assert require_text({"text": "a"}, "text", 1) == "a"
    with pytest.raises(BadRecord, match=r"^line 2: field 'body' is missing$"):
        require_text({"text": "a"}, "body", 2)
    with pytest.raises(BadRecord, match=r"^line 2: field 'text' must be a string, got an object$"):
        require_text({"text": {}}, "text", 2)


def test_gzip_is_detected_by_content(tmp_path):
    path = tmp_path / "docs.data"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n'))
    assert list(iter_lines(open_input(str(path)))) == [(1, b'{"text": "a"}')]


def test_every_whole_file_reader_keeps_one_policy(tmp_path):
    """Records is the one reader of a whole JSONL file; gpv-validate's checks and probe, gpv-report and
    gpv-train's JSONL data all read through it: an error record from upstream is left out and counted, a
    blank line is a bad line like any other (probe once skipped it, gpv-train too)."""
    from gpvtools.method.report import read_profiles
    from gpvtools.method.training.data import read as read_training
    from gpvtools.method.validation.probe_data import subject_scores
    from gpvtools.streaming.errors import GpvError
    from gpvtools.streaming.jsonl import Records

    profile = ('{"id": "a", "subject": "a", "n_perceptions": 2, "values": {"Power": {"score": 0.5, "n": 2, '
               '"sd": 0.1}}, "scorer": "s", "instrument": null, "group_by": ["subject"]}\n')
    upstream = '{"id": "x", "_gpv_error": {"command": "gpv-aggregate", "line": 3, "error": "boom"}}\n'
    good = tmp_path / "good.jsonl"
    good.write_text(upstream + profile)
    records = Records(str(good))
    assert [line for line, _ in records] == [2] and records.upstream_errors == 1
    assert read_profiles(str(good))[1] == 1
    records = Records(str(good))
    assert subject_scores(records) == {"a": {"Power": 0.5}} and records.upstream_errors == 1

    blank = tmp_path / "blank.jsonl"
    blank.write_text(profile + "\n" + profile.replace('"a"', '"b"'))
    with pytest.raises(BadRecord, match="^line 2: empty line$"):
        list(Records(str(blank)))
    with pytest.raises(BadRecord, match="^line 2: empty line$"):
        subject_scores(Records(str(blank)))
    with pytest.raises(GpvError, match=f"^{blank}: line 2: empty line$"):
        read_profiles(str(blank))
    item = '{"text": "I help.", "value": "Benevolence", "task": "relevance", "label": "yes"}\n'
    data = tmp_path / "items.jsonl"
    data.write_text(item + "\n" + item)
    with pytest.raises(GpvError, match=f"^{data}: line 2: empty line$"):
        read_training(str(data), "jsonl")
