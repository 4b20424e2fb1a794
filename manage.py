#!/usr/bin/env python
"""memorag manager: the one entry point for people and scripts (the commands live in ``cli/``).

Every user-facing failure is one line on stderr with exit code 2.
"""

from __future__ import annotations

import sys

from agent.choices import EVIDENCE_ORDERS, SCORERS
from cli import LineProgress, cli

MEMORY_SCORERS = SCORERS  # the CLI's choice lists are the library's (agent.choices)
__all__ = ["EVIDENCE_ORDERS", "MEMORY_SCORERS", "LineProgress", "cli", "main"]


def main() -> None:
    cli(prog_name="manage.py")


if __name__ == "__main__":
    sys.exit(main())
