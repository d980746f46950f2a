"""Nightly scoring entry point for clusters.

    ray job submit --working-dir . -- python -m jobs.score --config configs/score.yaml [--date 2026-11-24]

No logic lives here: parse the config, call vad, print the summary.
"""

import sys

from vad.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
