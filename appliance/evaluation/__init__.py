"""Measuring recommendation quality on datasets with ground truth."""
