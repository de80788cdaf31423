"""Benchmarks of fdfsmount and its client against their strongest anchors (`python -m bench`)."""
