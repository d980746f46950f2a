"""Nightly fusion entry point for clusters, after each member's scoring job of the night.

    ray job submit --working-dir . -- python -m jobs.fuse --config configs/fuse.yaml [--date 2026-11-24]

No logic lives here: parse the config, call vad, print the summary.
"""

import sys

from vad.cli import main

if __name__ == "__main__":
    sys.exit(main(["fuse", *sys.argv[1:]]))
