"""The epns benchmarks: one package, one entry point, ``python -m bench COMMAND``.

Run from the repository root with the project's venv (``.venv/bin/python -m
bench --help`` lists the commands; ``bench/README.md`` is the manual). The
scenarios are ``bench.scenarios.*``; the helper processes they start (load
generators, the publisher) are ``python -m bench.<module>``, with the same
interpreter, from the repository root.
"""

from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
