"""Re-rankers: reorder a short list of candidates for a request."""
