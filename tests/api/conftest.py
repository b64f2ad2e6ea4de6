"""Reporting for the API tests: the fuzzing run's figures at the end of the session."""

from __future__ import annotations

import pytest

#: ``tests/api/test_fuzz.py`` leaves the report of its run here.
FUZZ_REPORT = pytest.StashKey[str]()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    report = config.stash.get(FUZZ_REPORT, None)
    if report is not None:
        terminalreporter.write_sep("-", "fuzzing the HTTP API (schemathesis)")
        terminalreporter.write_line(report)
