"""Fusion presets measured against the library's two (agent.retrieval.FUSIONS) and kept for the benches.

Each was tried on QMSum train with ``retrieval.py --fusions all``; none beat
the default there (docs/benchmarks.md), so none serves queries.
"""

from __future__ import annotations

from agent.retrieval import FUSIONS, Fusion

EXPERIMENTS: dict[str, Fusion] = {
    "rrf": Fusion(),
    "rrf_share0.5": Fusion(clue_share=0.5),
    "rrf_share1": Fusion(clue_share=1.0),
    "rrf_share2": Fusion(clue_share=2.0),
    "anchored": Fusion(anchored=True),
    "anchored_share0.5": Fusion(clue_share=0.5, anchored=True),
    "rocchio0.25": Fusion(rocchio=0.25),
    "rocchio0.5": Fusion(rocchio=0.5),
    "rocchio1": Fusion(rocchio=1.0),
    "anchored_share1_pool10": Fusion(clue_share=1.0, anchored=True, pool=10),
    "rrf_pool10": Fusion(pool=10),
    "anchored_spans1": Fusion(clue_share=1.0, anchored=True, span_share=1.0),
    "anchored_spans1_share0.5": Fusion(clue_share=0.5, anchored=True, span_share=1.0),
    "anchored_spans1_share0": Fusion(clue_share=0.0, anchored=True, span_share=1.0),
    "anchored_spans0.5_share1": Fusion(clue_share=1.0, anchored=True, span_share=0.5),
}
ALL: dict[str, Fusion] = {**FUSIONS, **EXPERIMENTS}
