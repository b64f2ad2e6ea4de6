"""The wire contract: every request and response body of the HTTP API, as msgspec Structs.

Request structs reject unknown fields; response structs omit defaults. Fields are only ever
added, with defaults, so existing clients keep working.
"""
