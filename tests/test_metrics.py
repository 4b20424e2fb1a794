"""Metrics on hand-computed cases."""

from __future__ import annotations

import pytest

from agent.metrics import (
    answer_in,
    best_of,
    covered_fraction,
    exact_match,
    gold_chunk_ids,
    hit_at_k,
    normalize,
    recall_at_k,
    rouge_l,
    token_f1,
)
from store.vectors import Chunk


def test_normalization_follows_squad():
    assert normalize("The  Cat, sat on a MAT!") == "cat sat on mat"


def test_exact_match_ignores_case_punctuation_and_articles():
    assert exact_match("The Eiffel Tower.", "eiffel tower") == 1.0
    assert exact_match("Eiffel", "eiffel tower") == 0.0


def test_token_f1_by_hand():
    # prediction: cat sat on mat (4), gold: cat lay on mat today (5); common: cat, on, mat = 3
    # precision 3/4, recall 3/5 -> F1 = 2 * 0.75 * 0.6 / 1.35 = 0.6667
    assert token_f1("the cat sat on the mat", "a cat lay on the mat today") == pytest.approx(2 / 3)
    assert token_f1("nothing shared", "cat") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    assert token_f1("cat cat cat", "cat") == pytest.approx(0.5)  # counts are clipped: p 1/3, r 1


def test_rouge_l_by_hand():
    # LCS of "cat sat on mat" and "cat is on mat" is "cat on mat" (3); p = r = 3/4 (no stop-word removal)
    assert rouge_l("cat sat on mat", "cat is on mat") == pytest.approx(0.75)
    assert rouge_l("alpha", "beta") == 0.0


def test_best_of_takes_the_closest_gold():
    assert best_of(exact_match, "Paris", ["London", "paris"]) == 1.0
    assert best_of(token_f1, "x", []) == 0.0


def test_covered_fraction_counts_gold_characters_once():
    gold = [(100, 200), (500, 600)]  # 200 gold characters
    retrieved = [(150, 260), (180, 220), (900, 1000)]  # overlap 150-200 counted once: 50 characters
    assert covered_fraction(gold, retrieved) == pytest.approx(50 / 200)
    assert covered_fraction(gold, [(0, 100), (600, 700)]) == 0.0  # touching ends do not overlap
    assert covered_fraction(gold, [(0, 1000)]) == 1.0


def test_recall_and_hit_of_a_known_ranking():
    chunks = [Chunk("d", i, "x", 100 * i, 100 * i + 100, 0, 1) for i in range(10)]  # chunk i covers [100i, 100i+100)
    gold = gold_chunk_ids(chunks, [(150, 250), (720, 730)])
    assert gold == {"d#1", "d#2", "d#7"}
    ranked = ["d#7", "d#0", "d#2", "d#9", "d#5", "d#1"]
    assert recall_at_k(gold, ranked, 5) == pytest.approx(2 / 3)  # d:1 is sixth
    assert recall_at_k(gold, ranked, 6) == 1.0
    assert hit_at_k(gold, ranked, 1) == 1.0 and hit_at_k(gold, ["d#0", "d#3"], 5) == 0.0


def test_answer_in_evidence_matches_whole_words_after_normalization():
    evidence = "The Packers won Super Bowl I and II.\nThe code is 4721."
    assert answer_in(evidence, ["green bay packers", "Packers"]) == 1.0
    assert answer_in(evidence, ["4721"]) == 1.0
    assert answer_in(evidence, ["472"]) == 0.0, "part of a number is not the answer"
    assert answer_in(evidence, ["the"]) == 0.0, "an answer that normalizes to nothing never matches"
    assert answer_in(evidence, ["Super Bowl III"]) == 0.0
