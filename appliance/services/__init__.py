"""The pipeline: retrieve, fuse, re-rank and respond; record feedback and learn from it."""
