"""The reader grounds answers: copied from the evidence, cited to the character, checked, or declined."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent import reader
from agent.chat import chat_prompt
from agent.memory.decoding import score_continuations, token_logprobs
from agent.retrieval import Embedder, Evidence, chunk_document

SAMPLE = Path(__file__).resolve().parents[1] / "ops" / "sample" / "kellmouth.md"


def evidence(doc: str, text: str, tokenizer, question: str, embedder: Embedder, k: int = 5) -> list[Evidence]:
    """The pipeline's question-only dense retrieval, in document order with cosine scores."""
    chunks = chunk_document(doc, text, tokenizer)
    scores = embedder.encode([c.text for c in chunks]) @ embedder.encode([question])[0]
    top = sorted(range(len(chunks)), key=lambda i: -scores[i])[:k]
    return [Evidence(chunks[i], float(scores[i]), (0,)) for i in sorted(top)]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_short_questions_are_extracted_and_composed_ones_generated():
    for question in (
        "Who built the Kell bridge?",
        "When did season 2 start",
        "How many boats were lost?",
        "What year was the wall finished?",
        "Where is the statue?",
    ):
        assert reader.choose_path(question) == "extract", question
    for question in (
        "Summarize the town's history",
        "What did the mayor say about the fees?",
        "Why was the lighthouse built?",
        "Describe the harbour",
    ):
        assert reader.choose_path(question) == "generate", question
    assert reader.choose_path("Who built it?", "generate") == "generate"
    with pytest.raises(ValueError, match="unknown reader 'guess'"):
        reader.choose_path("Who?", "guess")


def test_names_numbers_and_dates_absent_from_the_evidence_are_caught():
    held = "The bridge was built in 1826 by the mason William Tarrant. Forty boats were lost in October."
    assert reader.unsupported_terms("William Tarrant built it in 1826.", held) == []
    assert reader.unsupported_terms("Forty boats, in October.", held) == []
    assert reader.unsupported_terms("According to the text, the builder was Tarrant.", held) == []  # first word
    assert reader.unsupported_terms("It was built by Ruth Adeyemi in 1830.", held) == ["Ruth", "Adeyemi", "1830"]
    assert reader.unsupported_terms("No boats were destroyed; twelve survived.", held) == ["twelve"]


def test_a_generated_answer_naming_what_the_evidence_lacks_is_withheld_with_the_closest_passage(tiny_lm):
    text = SAMPLE.read_text()
    chunks = chunk_document("d1", text, tiny_lm.tokenizer)
    found = [Evidence(c, 1.0 / (i + 1), (0,)) for i, c in enumerate(chunks) if "Tarrant" in c.text]
    reading = reader.check("The bridge was built by Ruth Adeyemi.", "generate", found)
    assert not reading.supported and reading.proposed == "The bridge was built by Ruth Adeyemi."
    assert "Ruth" in reading.reason and "Adeyemi" in reading.reason
    assert reading.text.startswith(f"{reader.NOT_SUPPORTED} The closest passage is d1#")
    assert "Ruth Adeyemi" not in reading.text
    kept = reader.check("The bridge was built by William Tarrant.", "generate", found)
    assert kept.supported and kept.text == "The bridge was built by William Tarrant."
    assert "William Tarrant" in kept.citation.quote
    assert text[kept.citation.char_start : kept.citation.char_end] == kept.citation.quote


def test_sentences_cite_their_exact_characters_in_the_document(tiny_lm):
    text = SAMPLE.read_text()
    chunks = chunk_document("d1", text, tiny_lm.tokenizer)
    sentences = reader.split_sentences([Evidence(c, 0.5, (0,)) for c in chunks[:6]])
    assert len(sentences) > 20
    for sentence in sentences:
        cited = sentence.citation()
        assert text[cited.char_start : cited.char_end] == sentence.text == cited.quote
        assert not sentence.text.startswith("#")  # headings are not sentences that answer anything


def test_a_count_is_a_number_of_the_thing_asked_about(tiny_lm):
    text = "The lifeboat came eight years after the storm. In the storm forty fishing boats were destroyed."
    chunk = chunk_document("d1", text, tiny_lm.tokenizer)[0]
    sentences = reader.split_sentences([Evidence(chunk, 1.0, (0,))])
    spans = [span for span, _ in reader.candidates("How many boats were destroyed?", sentences)]
    assert spans == ["forty"]
    assert [s for s, _ in reader.candidates("How many years passed?", sentences)] == ["eight"]


def test_candidates_are_scored_on_one_shared_prefix_exactly(tiny_lm):
    prompt = chat_prompt(tiny_lm.tokenizer, "Who built the bridge? Evidence: the mason William Tarrant built it.")
    options = [[500, 600, 700], [42], [900, 901], [11, 12, 13, 14]]
    shared = score_continuations(tiny_lm, None, prompt, options)
    for option, scores in zip(options, shared, strict=True):
        torch.testing.assert_close(
            torch.tensor(scores), torch.tensor(token_logprobs(tiny_lm, None, prompt, option)), rtol=1e-4, atol=1e-4
        )


@pytest.mark.model
def test_the_real_model_reads_the_demo_answers_out_of_the_evidence_and_declines_the_rest(real_lm, embedder):
    text = SAMPLE.read_text()
    asked = {
        "Who founded Kellmouth, and in which year?": "Agnes Perrow",
        "Who built the Kell bridge?": "William Tarrant",
        "Who designed the harbour wall?": "Margaret Ellery",
        "How many boats were destroyed in the great storm of 1851?": "forty",  # not "eight" (years after it)
    }
    for question, right in asked.items():
        reading = reader.extract(real_lm, question, evidence("d1", text, real_lm.tokenizer, question, embedder))
        assert reading.supported and reading.text == right, (question, reading)
        assert right in reading.citation.quote and reading.citation.doc_id == "d1"
        assert text[reading.citation.char_start : reading.citation.char_end] == reading.citation.quote
    off_topic = "Who won the 1998 football World Cup final in Paris?"
    reading = reader.extract(real_lm, off_topic, evidence("d1", text, real_lm.tokenizer, off_topic, embedder))
    assert not reading.supported and reading.text.startswith("The documents do not answer this question.")
    assert "covers" in reading.reason


def test_a_long_answer_keeps_only_the_sentences_the_evidence_supports(tiny_lm):
    held = "The committee met on Friday. They chose the yellow casing and postponed the budget."
    evidence = [Evidence(chunk_document("d1", held, tiny_lm.tokenizer)[0], 1.0, (0,))]
    text = (
        "The committee chose the yellow casing. Professor Morales asked for a vote in March. They postponed the budget."
    )
    reading = reader.check(text, "generate", evidence)
    assert reading.supported and reading.text == "The committee chose the yellow casing. They postponed the budget."
    assert reading.proposed == text and "Morales" in reading.reason and "March" in reading.reason
    alone = reader.check("Professor Morales asked for a vote in March.", "generate", evidence)
    assert not alone.supported and alone.text.startswith(reader.NOT_SUPPORTED)  # nothing left to show
