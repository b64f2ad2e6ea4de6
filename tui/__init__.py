"""The operators' terminal dashboard: a client of the appliance's HTTP API."""
