"""The names users choose among, importable without torch (the command line's choice lists).

Each registry that implements a name checks at import that it implements
exactly these, so a list here can never drift from the library.
"""

TASKS = ("qa", "memorag", "summarize")  # agent.pipeline.answer
READERS = ("auto", "extract", "generate")  # agent.reader
SCORERS = ("snapkv", "keynorm", "surprisal", "expected", "reconstruct")  # agent.memory.scorers.SCORERS
EVIDENCE_ORDERS = ("document", "best-last", "best-first")  # agent.retrieval.order_evidence
FUSIONS = ("anchored_share1", "anchored_spans2_share1")  # agent.retrieval.FUSIONS
DATASET_FORMATS = ("qmsum", "leval", "longbench", "needle", "kbqa", "longmemeval")  # agent.evaluation.load_samples
FEEDBACK_FORMATS = ("qmsum", "leval")  # labelled datasets with gold answers per document

DEFAULT_MODEL_DIRNAME = "smollm2-135m-instruct"  # the bundled model's directory under MEMORAG_HOME/models
