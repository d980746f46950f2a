"""`python -m vad ...`: the same command line as `vad` (for `ray job submit ... -- python -m vad score ...`)."""

import sys

from vad.cli import main

sys.exit(main())
