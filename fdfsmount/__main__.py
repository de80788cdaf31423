"""``python -m fdfsmount``: the same as the ``fdfsmount`` command."""

from __future__ import annotations

import sys

from .mount_cli import main

sys.exit(main())
