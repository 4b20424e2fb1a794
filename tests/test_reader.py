"""The reader answers with the documents' own sentence, cited to the character, its short span marked; generated
text only where the check passes; a decline when no sentence answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent import ranking, reader, spans
from agent.chat import chat_prompt
from agent.memory.decoding import score_continuations, token_logprobs
from agent.outline import outline
from agent.retrieval import Embedder, Evidence, chunk_document

SAMPLE = Path(__file__).resolve().parents[1] / "ops" / "sample" / "kellmouth.md"
MANUAL = """# Timers

## setTimeout(callback, delay)

Schedules execution of a one-time callback after delay milliseconds.

When delay is larger than 2147483647 or less than 1, the delay will be set to 1.

## timeout.unref()

When called, the active Timeout object will not require the event loop to remain active.
Calling `timeout.unref()` multiple times will have no effect.

Reference
=========

The `timers/promises` API provides timer functions that return Promise objects.
"""


def evidence(doc: str, text: str, tokenizer, question: str, embedder: Embedder, k: int = 5) -> list[Evidence]:
    """The pipeline's question-only dense retrieval, in document order with cosine scores."""
    chunks = chunk_document(doc, text, tokenizer)
    scores = embedder.encode([c.text for c in chunks]) @ embedder.encode([question])[0]
    top = sorted(range(len(chunks)), key=lambda i: -scores[i])[:k]
    return [Evidence(chunks[i], float(scores[i]), (0,)) for i in sorted(top)]


def passages(tokenizer, text: str, doc: str = "d1", size: int = 40) -> list[Evidence]:
    chunks = chunk_document(doc, text, tokenizer, target_tokens=size, overlap_tokens=0)
    return [Evidence(c, 1.0 / (i + 1), (0,)) for i, c in enumerate(chunks)]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_composed_questions_get_several_sentences_and_the_rest_one():
    for question in ("Who built the Kell bridge?", "How many boats were lost?", "What does path.join return?"):
        assert reader.choose_path(question) == "sentence", question
    for question in ("Summarize the town's history", "What did the mayor say about the fees?", "Why was it built?"):
        assert reader.choose_path(question) == "sentences", question
    assert reader.choose_path("Summarize it", "extract") == "sentence"
    assert reader.choose_path("Who built it?", "generate") == "generate"
    with pytest.raises(ValueError, match="unknown reader 'guess'"):
        reader.choose_path("Who?", "guess")


def test_typed_questions_are_told_apart():
    kinds = {
        "In which year did the wall fall?": "date",
        "How many boats were destroyed?": "number",
        "Who built the bridge?": "name",
        "Which event is emitted when a worker is forked?": "identifier",
        "Is the default policy round-robin or none?": "choice",
        "What does path.join do?": None,
    }
    for question, kind in kinds.items():
        assert spans.answer_type(question) == kind, question


def test_the_outline_names_the_title_and_the_headings_above_a_character():
    where = outline(MANUAL)
    assert where.title == "Timers"
    at = MANUAL.index("Calling `timeout")
    assert where.context_at(at) == "Timers > timeout.unref()"
    assert where.context_at(MANUAL.index("The `timers/promises`")) == "Timers > Reference"
    assert outline("no headings here\nat all").title == "no headings here"


def test_lexical_weighs_the_identifiers_the_question_names():
    texts = ["Calling unref on a timer has no effect twice.", "Calling timeout_unref has no effect twice."]
    scores = ranking.lexical("What does timeout_unref do?", texts)
    assert scores.max() == 1.0 and scores[1] > scores[0]
    named = ranking.identifiers("Is `start_response` or path.join called?")
    assert {"start_response", "path.join"} <= set(named) and "called" not in named
    assert list(ranking.lexical("zebra", texts)) == [0.0, 0.0]


def test_dense_reads_meaning_where_words_differ(embedder):
    texts = ["The capital city of France is Paris.", "Fishing boats were lost in the storm."]
    scores = ranking.dense(embedder, "Which town is the seat of the French government?", texts)
    assert scores[0] > scores[1] + 0.2


def test_coverage_is_the_share_of_the_question_held_and_rank_a_prior():
    texts = ["The bridge was built by William Tarrant.", "The bridge is old.", "Nothing here."]
    scores = ranking.coverage("Who built the bridge?", texts)
    assert scores[0] == pytest.approx(1.0) and 0 < scores[1] < 1 and scores[2] == 0
    assert list(ranking.rank_prior([0, 1, 3])) == [1.0, 0.5, 0.25]
    combined = ranking.combine({"dense": scores, "coverage": scores}, ranking.Weights(1, 1, 0, 0))
    assert list(combined) == pytest.approx(list(scores))  # lexical and rank weigh 0 here and are absent


def test_the_headings_above_a_sentence_count_in_its_ranking(tiny_lm, embedder):
    found = passages(tiny_lm.tokenizer, MANUAL)
    text_of = {"d1": MANUAL}.__getitem__
    question = "What happens when timeout.unref() is called twice?"
    with_headings = reader.read_sentences(tiny_lm, question, found, embedder=embedder, text_of=text_of)
    assert with_headings.supported and "multiple times will have no effect" in with_headings.text
    assert with_headings.citation.context == "Timers > timeout.unref()"


def test_a_sentence_answer_cites_its_exact_characters_and_marks_a_typed_span(tiny_lm, embedder):
    found = passages(tiny_lm.tokenizer, MANUAL)
    reading = reader.read_sentences(
        tiny_lm, "How many milliseconds is the delay set to when it is larger than 2147483647?", found,
        embedder=embedder, text_of={"d1": MANUAL}.__getitem__,
    )  # fmt: skip
    cited = reading.citation
    assert reading.supported and reading.path == "sentence"
    assert MANUAL[cited.char_start : cited.char_end] == cited.quote and "set to 1" in cited.quote
    assert cited.span is not None and MANUAL[cited.span.char_start : cited.span.char_end] == cited.span.text
    assert cited.span.text in {"1", "2147483647"} and reading.short == cited.span.text
    identifier = reader.read_sentences(
        tiny_lm, "Which API provides timer functions that return Promise objects?", found, embedder=embedder
    )
    assert identifier.citation.span.text == "timers/promises"


def test_an_off_topic_question_is_declined_naming_the_closest_passage(tiny_lm, embedder):
    found = passages(tiny_lm.tokenizer, MANUAL)
    reading = reader.read_sentences(tiny_lm, "What is the capital of Australia?", found, embedder=embedder)
    assert not reading.supported and reading.text.startswith(f"{reader.NOT_ANSWERED} The closest passage is d1#")
    assert "support" in reading.reason and reading.support < reader.MIN_SUPPORT


def test_a_long_answer_is_the_best_sentences_in_document_order_each_cited(tiny_lm, embedder):
    text = SAMPLE.read_text()
    found = passages(tiny_lm.tokenizer, text, size=120)
    reading = reader.read_sentences(
        tiny_lm, "Summarize what happened to the harbour", found, embedder=embedder, long=True
    )
    assert reading.supported and reading.path == "sentences" and 1 < len(reading.citations) <= reader.KEY_SENTENCES
    starts = [c.char_start for c in reading.citations]
    assert starts == sorted(starts)
    for c in reading.citations:
        assert text[c.char_start : c.char_end] == c.quote and " ".join(c.quote.split()) in reading.text


def test_names_numbers_and_dates_absent_from_the_evidence_are_caught():
    held = "The bridge was built in 1826 by the mason William Tarrant. Forty boats were lost in October."
    assert reader.unsupported_terms("William Tarrant built it in 1826.", held) == []
    assert reader.unsupported_terms("Forty boats, in October.", held) == []
    assert reader.unsupported_terms("According to the text, the builder was Tarrant.", held) == []  # first word
    assert reader.unsupported_terms("It was built by Ruth Adeyemi in 1830.", held) == ["Ruth", "Adeyemi", "1830"]


def test_the_check_passes_a_restated_sentence_and_fails_generic_prose(tiny_lm, embedder):
    found = passages(tiny_lm.tokenizer, SAMPLE.read_text(), size=120)
    restated = "The Kell bridge was built by the mason William Tarrant."
    kept = reader.check(restated, found, embedder=embedder)
    assert kept.supported and kept.text == restated and "Tarrant" in kept.citation.quote
    prose = "Here is an example of how to create a custom decorator that wraps your own functions."
    failed = reader.check(prose, found, embedder=embedder)
    assert not failed.supported and failed.proposed == prose and failed.text.startswith(reader.NOT_SUPPORTED)
    assert "holds its words" in failed.reason or "means the same" in failed.reason
    invented = reader.check("The Kell bridge was built by Jonas Morales.", found, embedder=embedder)
    assert not invented.supported and "Morales" in invented.reason
    # both names are in the document, but no one sentence says this: the harbour master did not build the bridge
    mixed = reader.check("The Kell bridge was built by Ruth Adeyemi.", found, embedder=embedder)
    assert not mixed.supported and "holds its words" in mixed.reason


def test_a_failed_generation_falls_back_to_the_documents_sentence(tiny_lm, embedder):
    found = passages(tiny_lm.tokenizer, SAMPLE.read_text(), size=120)
    question = "Who built the Kell bridge?"
    fallback = lambda: reader.read_sentences(tiny_lm, question, found, embedder=embedder)  # noqa: E731
    reading = reader.check("Bridges are useful structures.", found, embedder=embedder, fallback=fallback)
    assert reading.supported and reading.path == "sentence" and "Tarrant" in reading.text
    assert reading.proposed == "Bridges are useful structures." and "documents' sentence is shown" in reading.reason


def test_a_long_generated_answer_keeps_only_the_supported_sentences(tiny_lm):
    held = "The committee met on Friday. They chose the yellow casing and postponed the budget."
    found = [Evidence(chunk_document("d1", held, tiny_lm.tokenizer)[0], 1.0, (0,))]
    text = "They chose the yellow casing. Professor Morales asked for a vote in March. They postponed the budget."
    reading = reader.check(text, found)  # without an embedder: words and names alone
    assert reading.supported and reading.text == "They chose the yellow casing. They postponed the budget."
    assert reading.proposed == text and "Morales" in reading.reason


def test_candidates_are_scored_on_one_shared_prefix_exactly(tiny_lm):
    prompt = chat_prompt(tiny_lm.tokenizer, "Who built the bridge? Evidence: the mason William Tarrant built it.")
    options = [[500, 600, 700], [42], [900, 901], [11, 12, 13, 14]]
    shared = score_continuations(tiny_lm, None, prompt, options)
    for option, scores in zip(options, shared, strict=True):
        torch.testing.assert_close(
            torch.tensor(scores), torch.tensor(token_logprobs(tiny_lm, None, prompt, option)), rtol=1e-4, atol=1e-4
        )


def test_a_count_is_a_number_of_the_thing_asked_about(tiny_lm):
    text = "The lifeboat came eight years after the storm. In the storm forty fishing boats were destroyed."
    chunk = chunk_document("d1", text, tiny_lm.tokenizer)[0]
    sentences = reader.split_sentences([Evidence(chunk, 1.0, (0,))])
    assert [span for span, _ in spans.candidates("How many boats were destroyed?", sentences)] == ["forty"]
    assert [s for s, _ in spans.candidates("How many years passed?", sentences)] == ["eight"]


def test_the_answer_is_not_what_the_question_already_names_and_stands_near_its_words(tiny_lm):
    text = "Jeremy Johnson ( voiced by Mitchel Musso ) is Candace Flynn 's crush and later boyfriend."
    chunk = chunk_document("d1", text, tiny_lm.tokenizer)[0]
    sentences = reader.split_sentences([Evidence(chunk, 1.0, (0,))])
    question = "who does the voice of jeremy on phineas and ferb"
    options = spans.candidates(question, sentences)
    assert [span for span, _ in options] == ["Jeremy Johnson", "Mitchel Musso", "Candace Flynn"]
    assert spans.fresh(question, options).tolist() == [0.0, 1.0, 1.0]
    near = spans.near(question, options)  # "Johnson ( voiced": none between; "voiced by Mitchel": one
    assert near.tolist() == pytest.approx([1.0, 0.5, 0.2])
    found = spans.span_signals(None, question, sentences, options)
    assert options[spans.choose(found, spans.SpanWeights(likelihood=0.0))][0] == "Mitchel Musso"
    assert spans.choose(found, spans.SpanWeights(likelihood=0.0, fresh=0.0, near=0.0)) == 0  # equal: the first
    span = spans.mark_span(None, question, sentences, spans.SpanWeights(likelihood=0.0))
    assert text[span.char_start : span.char_end] == "Mitchel Musso"


def test_markup_is_not_words_and_a_sentence_opener_is_no_name(tiny_lm):
    text = "<Th> Location </Th>\n\n<Li> most free throws made </Li> </Ul\n\nHowever , Scout asked Miss Maudie ."
    chunk = chunk_document("d1", text, tiny_lm.tokenizer)[0]
    sentences = reader.split_sentences([Evidence(chunk, 1.0, (0,))])
    assert sentences[0].text.startswith("<Li> most free throws")  # the header cell is one word
    assert [span for span, _ in spans.candidates("who is the person who helps scout", sentences)] == ["Miss Maudie"]


@pytest.mark.model
def test_the_real_model_answers_the_demo_with_its_sentences_and_declines_the_rest(real_lm, embedder):
    text = SAMPLE.read_text()
    asked = {
        "Who founded Kellmouth, and in which year?": ("Agnes Perrow", "1612"),
        "Who built the Kell bridge?": ("William Tarrant",),
        "How many boats were destroyed in the great storm of 1851?": ("forty",),  # not "eight" (years after it)
    }
    for question, words in asked.items():
        found = evidence("d1", text, real_lm.tokenizer, question, embedder)
        reading = reader.read_sentences(real_lm, question, found, embedder=embedder, text_of=lambda _: text)
        assert reading.supported and all(w in reading.text for w in words), (question, reading)
        assert reading.citation.span.text == words[0], (question, reading.citation.span)
        assert text[reading.citation.char_start : reading.citation.char_end] == reading.citation.quote
    for off_topic in ("Who won the 1998 football World Cup?", "What is the capital of Australia?"):
        found = evidence("d1", text, real_lm.tokenizer, off_topic, embedder)
        reading = reader.read_sentences(real_lm, off_topic, found, embedder=embedder, text_of=lambda _: text)
        assert not reading.supported and reading.text.startswith(reader.NOT_ANSWERED), off_topic
