"""gpv-parse keeps what the text says (issue 26): every perception names its span, a model's perception the
chunk does not hold is dropped, what no perception covers is filled in, and an unusable reply is asked for
again and then stood in for by the chunk's sentences, marked, so that no reply ends a run.

The model is ScriptedChatServer (tests/servers.py), a stand-in chat server on 127.0.0.1 whose replies the
test writes, so that each kind of bad reply can be sent on purpose; the built-in model's own replies are
tested in test_parse.py and measured end to end by bench/e2e.py.
"""

import orjson

from gpvtools.commands import parse

from .servers import ScriptedChatServer

TEXT = ("I spent the whole weekend helping my neighbour rebuild her fence after the storm. On Monday my manager "
        "offered me the team lead role. I have wanted this for three years and I intend to be very good at it.")
CHUNK = {"id": "ana#c0", "doc_id": "ana", "author": "ana", "text": TEXT}


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def lines(text):
    return [orjson.loads(line) for line in text.splitlines()]


def run(invoke, script, tmp_path, *extra, chunks=(CHUNK,)):
    with ScriptedChatServer(script) as server:
        result = invoke(parse.main, ["--base-url", server.url, "--cache", str(tmp_path / "cache"), "--backoff", "0.01",
                                     *extra], jsonl(chunks))
        return result, server.requests


def reply(*perceptions):
    return orjson.dumps({"perceptions": list(perceptions)}).decode()


def test_every_perception_names_its_span_and_what_no_perception_covers_is_filled_in(invoke, tmp_path):
    result, _ = run(invoke, lambda r: reply("Helping my neighbour rebuild her fence after the storm",
                                             "Intends to be very good at the job, having wanted it for years"),
                    tmp_path)
    assert result.exit_code == 0, result.stderr
    out = lines(result.stdout)
    assert [(r["parse"], r["perception"], r["span"], r["grounding"]) for r in out] == [
        ("model", "Helping my neighbour rebuild her fence after the storm", [26, 80], 1.0),
        ("sentence", "On Monday my manager offered me the team lead role.", [82, 133], 1.0),
        ("model", "Intends to be very good at the job, having wanted it for years", [134, 204], 0.8),
    ]
    assert TEXT[26:80] == "helping my neighbour rebuild her fence after the storm"  # a copy: exactly where
    assert TEXT[134:204] == "I have wanted this for three years and I intend to be very good at it."
    assert [r["id"] for r in out] == ["ana#c0#p0", "ana#c0#p1", "ana#c0#p2"] and out[0]["n_perceptions"] == 3
    assert "of the perceptions, 2 the model's (each found in its chunk), 1 sentence no perception of the " \
           "model's covered, 0 from chunks that fell back" in result.stderr
    # a perception that draws on two sentences spans both, and so covers both
    result, _ = run(invoke, lambda r: reply("Wants to be very good at the team lead role"), tmp_path / "other")
    assert [(r["parse"], r["span"]) for r in lines(result.stdout)] == [("sentence", [0, 81]), ("model", [82, 204])]


def test_a_perception_the_chunk_does_not_hold_is_dropped_and_counted(invoke, tmp_path):
    result, requests = run(invoke, lambda r: reply("I spent the whole weekend helping my neighbour",
                                                   "Economic growth matters more than anything to our town"),
                           tmp_path, "--no-fill")
    assert result.exit_code == 0, result.stderr
    assert [r["perception"] for r in lines(result.stdout)] == ["I spent the whole weekend helping my neighbour"]
    assert "and 1 perception not found in the chunk (or of under three words)" in result.stderr
    assert len(requests) == 1  # a reply with something found in the chunk is used as it is


def test_an_unusable_reply_is_asked_for_again_with_other_sampling(invoke, tmp_path):
    def script(request):  # greedy: prose; sampled: a good reply
        return "Sure! The author values hard work." if request["temperature"] == 0 else \
            reply("I have wanted this for three years")

    result, requests = run(invoke, script, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert [(r["temperature"], r.get("seed")) for r in requests] == [(0.0, None), (0.7, 1)]
    out = lines(result.stdout)
    assert "model" in {r["parse"] for r in out} and "fallback" not in {r["parse"] for r in out}
    assert "1 reply asked for again; 0 chunks fell back" in result.stderr


def test_replies_that_stay_unusable_never_end_the_run_the_sentences_stand_in(invoke, tmp_path):
    """The issue's case: a run with the default --on-error fail stopped at the first odd reply. Now each
    chunk gets --attempts replies, then its sentences, marked, and the run goes on to the next chunk."""
    other = {"id": "ben#c0", "doc_id": "ben", "text": "We should protect what we cannot replace. Traditions keep a family together."}

    def script(request):
        text = request["messages"][-1]["content"]
        if "neighbour" in text:
            return '{"perceptions": ["The above text is based on the following JSON data: ", '  # never closed
        return reply("We should protect what we cannot replace")

    result, requests = run(invoke, script, tmp_path, chunks=(CHUNK, other))
    assert result.exit_code == 0, result.stderr
    assert sum("neighbour" in r["messages"][-1]["content"] for r in requests) == 3
    out = lines(result.stdout)
    ana = [r for r in out if r["doc_id"] == "ana"]
    assert [r["perception"] for r in ana] == [
        "I spent the whole weekend helping my neighbour rebuild her fence after the storm.",
        "On Monday my manager offered me the team lead role.",
        "I have wanted this for three years and I intend to be very good at it."]
    assert {r["parse"] for r in ana} == {"fallback"}
    problem = ana[0]["parse_problem"]
    assert problem.startswith("the model's reply is not JSON (Expecting value at character ")
    assert [r["parse"] for r in out if r["doc_id"] == "ben"] == ["model", "sentence"]
    stderr = result.stderr.splitlines()
    assert stderr[0] == (f"gpv-parse: line 1: chunk 'ana#c0': 3 replies could not be used (the last: {problem}); "
                         "its sentences stand in, marked \"parse\": \"fallback\"")
    assert any(line.startswith("gpv-parse: 2 replies asked for again; 1 chunk fell back to its sentences")
               for line in stderr)


def test_a_reply_whose_perceptions_are_all_inventions_or_the_example_is_unusable(invoke, tmp_path):
    from gpvtools.method import parsing

    answers = iter([reply(*parsing.EXAMPLE_PERCEPTIONS), reply("Economic growth matters to our whole town"),
                    reply("I intend to be very good at it")])
    result, requests = run(invoke, lambda r: next(answers), tmp_path, "--no-fill")
    assert result.exit_code == 0, result.stderr
    assert [r["perception"] for r in lines(result.stdout)] == ["I intend to be very good at it"]
    assert len(requests) == 3


def test_attempts_one_and_min_grounding_zero(invoke, tmp_path):
    result, requests = run(invoke, lambda r: "no JSON here", tmp_path, "--attempts", "1")
    assert len(requests) == 1 and {r["parse"] for r in lines(result.stdout)} == {"fallback"}
    invented = reply("Economic growth matters to our whole town")
    result, _ = run(invoke, lambda r: invented, tmp_path / "other", "--min-grounding", "0", "--no-fill")
    out = lines(result.stdout)
    assert [r["perception"] for r in out] == ["Economic growth matters to our whole town"]
    assert out[0]["grounding"] < 0.6 and out[0]["parse"] == "model"


def test_bad_input_still_fails_the_run(invoke, tmp_path):
    result, requests = run(invoke, lambda r: reply("x"), tmp_path, chunks=({"id": "x", "text": 42},))
    assert result.exit_code == 1 and requests == []
    assert result.stderr.startswith("gpv-parse: error: line 1: field 'text' must be a string, got a number")


def test_the_card_names_the_grounding(invoke, tmp_path):
    result, _ = run(invoke, lambda r: reply("I have wanted this for three years"), tmp_path)
    card = lines(result.stdout)[0]["parser_instrument"]
    assert card["grounding"] == {"min_grounding": 0.6, "fill": True, "attempts": 3, "retry_temperatures": [0.7, 1.0]}
    other, _ = run(invoke, lambda r: reply("I have wanted this for three years"), tmp_path / "other", "--no-fill")
    assert lines(other.stdout)[0]["parser_instrument"]["id"] != card["id"]


def test_the_segmenters_need_no_model(invoke):
    for backend, expected in (("sentences", 3), ("clauses", 3)):
        result = invoke(parse.main, ["--backend", backend], jsonl([CHUNK]))
        assert result.exit_code == 0, result.stderr
        out = lines(result.stdout)
        assert len(out) == expected and {r["parse"] for r in out} == {"sentence"}
        assert all(" ".join(TEXT[s:e].split()) == r["perception"] for r in out for s, e in [r["span"]])
        assert out[0]["parser"] == backend and out[0]["parser_instrument"]["backend"] == backend
