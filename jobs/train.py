"""Training entry point for clusters.

    ray job submit --working-dir . -- python -m jobs.train --config configs/train.yaml
"""

import sys

from vad.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
