"""Query parameters shared by the listing endpoints."""

from __future__ import annotations

from typing import Annotated

from litestar.params import Parameter

MAX_PAGE = 1000

#: How many entries one page holds.
PageLimit = Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="Entries per page")]
#: Where the previous page ended.
PageCursor = Annotated[str | None, Parameter(description="next_cursor of the previous page")]
