"""The scale bench's corpus: sections cover the text, cut at line breaks, and the run is cut at its checkpoints."""

from __future__ import annotations

import pytest

from tests.conftest import _default_dir, essays_text


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_default_dir())


def test_sections_cover_the_text_cut_at_line_breaks_and_keep_the_questions(tokenizer):
    import scale

    text = essays_text(30_000)
    parts = scale.sections(tokenizer, scale.Doc("essays", text, 0, ["what?"]), 1000)
    assert "".join(p.text for p in parts) == text
    assert len(parts) > 3 and all(p.questions == ["what?"] for p in parts)
    assert all(p.text.endswith("\n") for p in parts[:-1])
    assert all(250 <= p.tokens <= 1150 for p in parts), [p.tokens for p in parts]
    assert [p.name for p in parts[:2]] == ["essays-0", "essays-1"]


def test_segments_end_where_each_checkpoint_is_first_reached():
    import scale

    docs = [scale.Doc(f"d{i}", "", 3000) for i in range(5)]
    cut = scale.segments(docs, [5000, 9000, 9500])
    assert [(count, [d.name for d in part]) for count, part in cut] == [
        (6000, ["d0", "d1"]),
        (9000, ["d2"]),
        (12000, ["d3"]),
        (15000, ["d4"]),
    ]
