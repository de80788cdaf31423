"""Command-line tools built on the protocol client."""
