import pytest

# Show the compared values when an assertion inside the shared helpers fails.
pytest.register_assert_rewrite("tests.api.calls")
