"""Mount a FastDFS cluster as a directory tree, over a trio protocol client."""

__version__ = "0.1.0"
