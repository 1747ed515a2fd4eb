"""Grounding (gpvtools/method/grounding.py): sentences as spans, where a model's perception was said, and the
parse that keeps only what the text says. Pure functions: no model."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gpvtools.method import grounding

ORCHARD = ("Our town council wants to pave over the old orchard for a parking lot. I went to the meeting and said "
           "what I think: those trees were planted by our grandparents and the birds and bees depend on them. We "
           "should protect what we cannot replace. Some people laughed, but twenty signed my petition afterwards.")


def texts(text):
    return [grounding.span_text(text, s) for s in grounding.sentence_spans(text)]


def test_sentences_of_an_ordinary_paragraph():
    assert texts(ORCHARD) == [
        "Our town council wants to pave over the old orchard for a parking lot.",
        "I went to the meeting and said what I think: those trees were planted by our grandparents and the birds "
        "and bees depend on them.",
        "We should protect what we cannot replace.",
        "Some people laughed, but twenty signed my petition afterwards.",
    ]


def test_sentences_that_start_in_lower_case_still_end_at_a_full_stop():
    """Touché's premises (and much blog text) start in lower case; the old splitter ran them together."""
    text = ("we should ban human cloning as it will only cause huge issues. fast food should be banned because it "
            "is really bad for your health and is costly.")
    assert texts(text) == ["we should ban human cloning as it will only cause huge issues.",
                           "fast food should be banned because it is really bad for your health and is costly."]


def test_titles_initials_and_abbreviations_do_not_end_a_sentence():
    text = ("Mr. Smith met Dr. Jones at 3 p.m. near the station. J. K. Rowling lives in the U.K. these days. "
            "We bought apples, pears, etc. and went home. It was fine.")
    assert texts(text) == ["Mr. Smith met Dr. Jones at 3 p.m. near the station.",
                           "J. K. Rowling lives in the U.K. these days.",
                           "We bought apples, pears, etc. and went home.", "It was fine."]


def test_an_ellipsis_before_a_small_letter_goes_on_and_quotes_close_a_sentence():
    text = 'I was like... whatever, who cares. She said "go home!" Then she left for good.'
    assert texts(text) == ["I was like... whatever, who cares.", 'She said "go home!"', "Then she left for good."]


def test_newlines_wrap_lines_unless_a_sentence_or_paragraph_ends():
    text = ("I have wanted this role for\nthree years and I will be good at it\nMy manager agrees with me on that\n\n"
            "- first item of the list here\n- second item of the list here")
    assert texts(text) == ["I have wanted this role for three years and I will be good at it",
                           "My manager agrees with me on that",
                           "- first item of the list here", "- second item of the list here"]


def test_short_pieces_join_a_neighbour_so_nothing_is_lost():
    assert texts("Wow. I finally finished the marathon today. So proud!") == [
        "Wow. I finally finished the marathon today. So proud!"]
    assert texts("Yes. No.") == ["Yes. No."]
    assert texts("   ") == [] and texts("*** :) ***") == []


WORDS = st.lists(st.sampled_from(list("abcXYZ .!?\n\"')…;,-") + ["Mr.", "e.g.", "...", "\n\n", " I "]),
                 max_size=80).map("".join)


@settings(max_examples=300, deadline=None)
@given(WORDS)
def test_spans_are_ordered_trimmed_and_cover_every_word(text):
    spans = grounding.sentence_spans(text)
    for (s, e), nxt in zip(spans, spans[1:] + [(len(text), len(text))]):
        assert 0 <= s < e <= nxt[0]
        assert not text[s].isspace() and not text[e - 1].isspace()
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    for m in re.finditer(r"[^\W_]", text):
        assert m.start() in covered, (text, spans)


def test_clauses_cut_at_semicolons_dashes_and_but_where_both_sides_say_something():
    text = ("I never cook the same thing twice if I can help it; the fun is in not knowing how it turns out. "
            "Everyone told me to stay, but I want to decide for myself what my days are for. Small but fine.")
    spans = grounding.clause_spans(text)
    assert [grounding.span_text(text, s) for s in spans] == [
        "I never cook the same thing twice if I can help it",
        "the fun is in not knowing how it turns out.",
        "Everyone told me to stay",
        "but I want to decide for myself what my days are for.",
        "Small but fine.",
    ]


def test_a_copy_is_found_exactly_and_a_paraphrase_in_its_sentence():
    spans = grounding.sentence_spans(ORCHARD)
    copy = grounding.align("we should protect what we cannot replace", ORCHARD, spans)
    assert ORCHARD[copy.start:copy.end] == "We should protect what we cannot replace" and copy.grounding == 1.0
    para = grounding.align("Protecting the orchard trees our grandparents planted", ORCHARD, spans)
    assert para.span == list(spans[1]) or para.span == [spans[0][0], spans[1][1]]
    assert para.grounding >= grounding.MIN_GROUNDING


def test_an_invention_is_not_found():
    spans = grounding.sentence_spans(ORCHARD)
    found = grounding.align("Economic growth matters more than anything else to me", ORCHARD, spans)
    assert found is None or found.grounding < grounding.MIN_GROUNDING
    assert grounding.align("the and of", ORCHARD, spans) is None  # no content word at all


def test_words_of_the_question_count_for_an_answer():
    answer = "I would not cover it up. Being honest matters more than the bonus."
    question = "A colleague asks you to cover up a mistake that would cost the team a bonus."
    spans = grounding.sentence_spans(answer)
    alone = grounding.align("Refuses to cover up a colleague's mistake", answer, spans)
    with_question = grounding.align("Refuses to cover up a colleague's mistake", answer, spans, context=question)
    assert alone.grounding < grounding.MIN_GROUNDING <= with_question.grounding
    assert answer[with_question.start:with_question.end] == "I would not cover it up."


def test_ground_keeps_what_is_found_drops_the_rest_and_fills_what_no_perception_covers():
    found = ["We should protect what we cannot replace", "The birds and bees matter for our town's economy and jobs"]
    kept, dropped = grounding.ground(found, ORCHARD)
    assert dropped == ["The birds and bees matter for our town's economy and jobs"]
    assert [(p.parse, p.text) for p in kept] == [
        ("sentence", "Our town council wants to pave over the old orchard for a parking lot."),
        ("sentence", texts(ORCHARD)[1]),
        ("model", "We should protect what we cannot replace"),
        ("sentence", "Some people laughed, but twenty signed my petition afterwards."),
    ]
    for p in kept:
        assert ORCHARD[p.span[0]:p.span[1]].lower().startswith(p.text[:10].lower())
    without, _ = grounding.ground(found, ORCHARD, fill=False)
    assert [p.parse for p in without] == ["model"]
    everything, dropped = grounding.ground(found, ORCHARD, min_grounding=0, fill=False)
    assert len(everything) == 2 and dropped == []


def test_segment_gives_every_sentence_as_it_stands():
    out = grounding.segment(ORCHARD)
    assert [p.text for p in out] == texts(ORCHARD)
    assert {p.parse for p in out} == {"sentence"} and all(p.grounding == 1.0 for p in out)


def test_a_fragment_is_no_statement_even_where_the_text_holds_it():
    kept, dropped = grounding.ground(["We should", "We should protect what we cannot replace"], ORCHARD, fill=False)
    assert dropped == ["We should"] and [p.text for p in kept] == ["We should protect what we cannot replace"]
