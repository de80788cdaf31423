"""`python -m bench`: every speed against its anchor, as a table and a plot (see run_all)."""

from __future__ import annotations

import sys

from bench.run_all import main

sys.exit(main())
