"""A self-hosted recommendation appliance: embedded vector search and learned preferences."""

__version__ = "0.1.0"
