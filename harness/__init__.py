"""Test harness: real FastDFS clusters of OS processes on loopback, plus pytest fixtures."""
