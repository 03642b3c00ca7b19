"""``python -m ops.bench`` (from the repository root) is the same as ``python ops/bench/run.py``."""

import sys

from ops.bench.runner import main

sys.exit(main())
