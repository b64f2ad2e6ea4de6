"""Reading catalog files (JSON Lines, CSV, TSV) into items for ``appliance ingest``.

Each record becomes a :class:`Row` holding an item in the catalog's wire format
(``{"item_id", "title", "text", "metadata"}``, as in ``appliance/schemas/items.py``) or a
:class:`Rejected` saying which line was skipped and why, so one bad record never stops an
import. Files are streamed line by line; nothing here holds a whole file in memory.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from appliance.domain import FIELD_NAME
from appliance.schemas.base import MAX_ID_LENGTH
from appliance.schemas.items import MAX_METADATA_KEYS, MAX_TEXT_LENGTH, MAX_TITLE_LENGTH

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

# The limits of ItemIn are checked here too, so that a bad record is reported with its line
# instead of a whole batch being sent and refused.

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json-lines")
CSV_SUFFIXES = (".csv", ".tsv")
#: Values accepted for ``fmt``: "csv" guesses the delimiter (tab for .tsv files, otherwise
#: whichever of comma, tab and semicolon the header uses most); "tsv" forces a tab.
FORMATS = ("jsonl", "csv", "tsv")

_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x1f]")
_METADATA_KEY = re.compile(FIELD_NAME)
# Only plain decimal numbers are converted: "007" or "+1" are codes rather than quantities,
# and "nan" or "1,000" are left for the user to interpret.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# Larger integers do not survive a round trip through JSON readers that use 64-bit integers.
_MAX_INT = 2**63 - 1
_SHOWN_ID_LENGTH = 40


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which columns (CSV) or keys (JSON Lines) hold each part of an item.

    Attributes:
        item_id: Column or key of the item id.
        title: Column or key of the title.
        text: Columns or keys whose values are joined into the text, in order; empty ones
            are skipped. A missing column "text" is allowed, as the field is optional.
        metadata: Columns or keys copied into metadata. ``None`` means: for JSON Lines the
            ``"metadata"`` object when a record has one, otherwise every other key; for CSV
            every column not used above.
        list_separator: When set, metadata strings containing it become lists of the
            stripped, non-empty parts ("Comedy|Drama" -> ["Comedy", "Drama"]).

    """

    item_id: str = "item_id"
    title: str = "title"
    text: tuple[str, ...] = ("text",)
    metadata: tuple[str, ...] | None = None
    list_separator: str | None = None

    def __post_init__(self) -> None:
        """Refuse mappings that cannot select anything.

        Raises:
            TypeError: If ``text`` or ``metadata`` is a single string instead of a tuple,
                which would otherwise be read as one column per character.
            ValueError: If a column name or the list separator is empty.

        """
        if not self.item_id or not self.title:
            raise ValueError("the item_id and title columns must be named")
        for field_name, names in (("text", self.text), ("metadata", self.metadata)):
            if isinstance(names, str):
                raise TypeError(f"{field_name} must be a tuple of column names, not a string")
            if names is not None and not all(names):
                raise ValueError(f"{field_name} lists an empty column name")
        if self.list_separator == "":
            raise ValueError("list_separator must not be empty; use None to keep strings")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that was skipped.

    Attributes:
        line: 1-based line of the record; for CSV the first physical line of the row.
        reason: What is wrong, phrased so the user can fix the file.

    """

    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Row:
    """A record read successfully.

    Attributes:
        line: 1-based line of the record; for CSV the first physical line of the row.
        item: ``{"item_id", "title", "text", "metadata"}``, ready for the items API.

    """

    line: int
    item: dict[str, Any]


class _RecordError(Exception):
    """A record cannot become an item; the message is the rejection reason."""


def detect_format(path: Path) -> Literal["jsonl", "csv"]:
    """Tell the file format from the file name.

    Args:
        path: The catalog file.

    Returns:
        "jsonl" for .jsonl, .ndjson and .json-lines files; "csv" for .csv and .tsv files
        (:func:`read_items` reads .tsv files with a tab delimiter).

    Raises:
        ValueError: If the suffix is none of those; the message lists the supported ones.

    """
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in CSV_SUFFIXES:
        return "csv"
    supported = ", ".join(JSONL_SUFFIXES + CSV_SUFFIXES)
    hint = ""
    if suffix == ".json":
        hint = "; a .json file holding one array is not read: write one object per line"
    raise ValueError(
        f"cannot tell the format of {path.name!r} from its suffix; supported suffixes are "
        f"{supported}{hint}",
    )


def read_items(
    path: Path,
    mapping: ColumnMapping = ColumnMapping(),  # frozen, so sharing it is safe
    fmt: str | None = None,
) -> Iterator[Row | Rejected]:
    """Read a catalog file record by record.

    The format, the mapping and (for CSV) the header are checked when this is called, so
    that a wrong invocation fails before anything is imported; the records themselves are
    read lazily while iterating.

    Args:
        path: The catalog file, UTF-8 (a byte order mark is tolerated).
        mapping: Where each part of an item comes from.
        fmt: "jsonl", "csv" or "tsv"; ``None`` detects it with :func:`detect_format`.

    Returns:
        One :class:`Row` or :class:`Rejected` per non-blank record, in file order.

    Raises:
        ValueError: If the format is unknown or cannot be detected, the CSV file has no
            header, or a mapped column is not in the header (the message names it and lists
            the header).
        OSError: If the file cannot be opened.

    """
    resolved = _resolve_format(path, fmt)
    if resolved == "jsonl":
        # Opened once here so that a missing file is reported now, not on first iteration.
        path.open("rb").close()
        return _read_jsonl(path, mapping)
    delimiter = _delimiter(path, resolved)
    columns = _Columns.from_header(_read_header(path, delimiter), mapping, path)
    return _read_csv(path, delimiter, columns, mapping)


@dataclass(frozen=True, slots=True)
class Batch:
    """Valid items ready for one upsert, and the records rejected since the previous batch."""

    items: list[dict[str, Any]]
    rejected: list[Rejected]


def batches(records: Iterable[Row | Rejected], size: int) -> Iterator[Batch]:
    """Group records for upserting, at most ``size`` items and each item id once per batch.

    The items API refuses a batch that names an item twice; a repeated id therefore starts a
    new batch, so the later line of the file wins, as it would if the lines were sent one by one.

    Args:
        records: What ``read_items`` yields.
        size: Most items per batch.

    Yields:
        Batches in file order; the last may be smaller, or hold only rejected records.

    """
    items: dict[str, dict[str, Any]] = {}
    rejected: list[Rejected] = []
    for record in records:
        if isinstance(record, Rejected):
            rejected.append(record)
            continue
        if record.item["item_id"] in items:
            yield Batch(list(items.values()), rejected)
            items, rejected = {}, []
        items[record.item["item_id"]] = record.item
        if len(items) >= size:
            yield Batch(list(items.values()), rejected)
            items, rejected = {}, []
    if items or rejected:
        yield Batch(list(items.values()), rejected)


def count_records(path: Path, fmt: str | None = None) -> int:
    """Count the records :func:`read_items` will yield, for a progress bar's total.

    JSON Lines files are counted by non-blank lines; CSV files are parsed (without building
    items) because quoted cells may span several lines.

    Args:
        path: The catalog file.
        fmt: "jsonl", "csv" or "tsv"; ``None`` detects it with :func:`detect_format`.

    Returns:
        The number of non-blank records, not counting a CSV header.

    Raises:
        ValueError: If the format is unknown or cannot be detected.
        OSError: If the file cannot be opened.

    """
    resolved = _resolve_format(path, fmt)
    if resolved == "jsonl":
        with path.open("rb") as file:
            return sum(1 for _ in _nonblank_lines(file))
    rows = sum(1 for _ in _csv_records(path, _delimiter(path, resolved)))
    # The first non-blank row is the header.
    return max(rows - 1, 0)


# -- formats --------------------------------------------------------------------------------


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is None:
        return detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return fmt


def _delimiter(path: Path, fmt: str) -> str:
    if fmt == "tsv" or path.suffix.lower() == ".tsv":
        return "\t"
    with path.open("rb") as file:
        header = next((line for _, line in _nonblank_lines(file)), b"")
    counts = {delimiter: header.count(delimiter.encode()) for delimiter in (",", "\t", ";")}
    best = max(counts, key=lambda delimiter: counts[delimiter])
    # A single-column header has no delimiter at all; comma is then as good as any.
    return best if counts[best] > counts[","] else ","


# -- JSON Lines -----------------------------------------------------------------------------


def _nonblank_lines(file: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line number, line)`` for every non-blank line, without the BOM."""
    for number, line in enumerate(file, start=1):
        raw = line.removeprefix(_BOM) if number == 1 else line
        if raw.strip():
            yield number, raw


def _read_jsonl(path: Path, mapping: ColumnMapping) -> Iterator[Row | Rejected]:
    decoder = msgspec.json.Decoder()
    with path.open("rb") as file:
        for number, raw in _nonblank_lines(file):
            try:
                record = decoder.decode(raw)
            except msgspec.DecodeError as error:
                message = str(error).removeprefix("JSON is malformed: ")
                yield Rejected(number, f"invalid JSON: {message[:1].lower()}{message[1:]}")
                continue
            except UnicodeDecodeError:
                yield Rejected(number, _not_utf8(raw))
                continue
            if not isinstance(record, dict):
                yield Rejected(number, f"expected a JSON object, got {_json_type(record)}")
                continue
            try:
                yield Row(number, _item_from_json(record, mapping))
            except _RecordError as error:
                yield Rejected(number, str(error))


def _item_from_json(record: dict[str, Any], mapping: ColumnMapping) -> dict[str, Any]:
    item_id = record.get(mapping.item_id)
    # Numeric ids are common in exports; the catalog's ids are strings.
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    item_id = _json_string(item_id, "item_id", mapping.item_id)
    title = _json_string(record.get(mapping.title), "title", mapping.title)
    texts = [_json_string(record.get(key), "text", key) for key in mapping.text]
    if mapping.metadata is not None:
        metadata = {key: record[key] for key in mapping.metadata if record.get(key) is not None}
    elif "metadata" in record:
        metadata = record["metadata"]
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise _RecordError(
                f"metadata must be a JSON object, got {_json_type(metadata)} (key 'metadata')",
            )
    else:
        used = {mapping.item_id, mapping.title, *mapping.text}
        metadata = {
            key: value for key, value in record.items() if key not in used and value is not None
        }
    if mapping.list_separator is not None:
        metadata = {
            key: _split(value, mapping.list_separator) if isinstance(value, str) else value
            for key, value in metadata.items()
        }
        metadata = {key: value for key, value in metadata.items() if value != []}
    return _item(
        item_id,
        title,
        _join_text(texts),
        metadata,
        mapping=mapping,
        kind="key",
    )


def _json_string(value: object, field: str, key: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise _RecordError(f"{field} must be a string, got {_json_type(value)} (key {key!r})")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -- CSV ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Columns:
    """Header positions of the mapped columns."""

    item_id: int
    title: int
    text: tuple[int, ...]
    metadata: tuple[tuple[str, int], ...]
    width: int

    @classmethod
    def from_header(cls, header: list[str], mapping: ColumnMapping, path: Path) -> _Columns:
        positions: dict[str, int] = {}
        for position, name in enumerate(header):
            # With duplicate names the first column wins, as a reader would expect.
            positions.setdefault(name, position)

        def find(name: str, role: str) -> int:
            if name not in positions:
                listed = ", ".join(repr(column) for column in header)
                raise ValueError(
                    f"{role} column {name!r} is not in the header of {path.name}; "
                    f"its columns are: {listed}",
                )
            return positions[name]

        item_id = find(mapping.item_id, "item_id")
        title = find(mapping.title, "title")
        text = tuple(
            find(name, "text")
            for name in mapping.text
            # "text" is optional in the wire format, so the default mapping may miss it.
            if name in positions or name != "text"
        )
        if mapping.metadata is None:
            used = {mapping.item_id, mapping.title, *mapping.text}
            metadata = tuple(
                (name, position)
                for name, position in positions.items()
                # Unnamed columns (a spreadsheet's row numbers) would make unusable keys.
                if name and name not in used
            )
            hint = "; choose the metadata columns explicitly"
        else:
            names = dict.fromkeys(mapping.metadata)
            metadata = tuple((name, find(name, "metadata")) for name in names)
            hint = ""
        if len(metadata) > MAX_METADATA_KEYS:
            raise ValueError(
                f"{len(metadata)} metadata columns, but an item has at most "
                f"{MAX_METADATA_KEYS} metadata keys{hint}",
            )
        return cls(
            item_id=item_id,
            title=title,
            text=text,
            metadata=metadata,
            width=len(header),
        )


@dataclass(frozen=True, slots=True)
class _CsvRecord:
    line: int
    cells: list[str] | None
    """``None`` when the row could not be parsed or decoded; ``error`` says why."""
    error: str = ""


def _csv_records(path: Path, delimiter: str) -> Iterator[_CsvRecord]:
    """Yield every non-blank row, the header included, with its first physical line."""
    bad_lines: set[int] = set()

    def decoded(file: Iterable[bytes]) -> Iterator[str]:
        # Decoding line by line keeps one badly encoded row from ending the whole import.
        for number, line in enumerate(file, start=1):
            raw = line.removeprefix(_BOM) if number == 1 else line
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                bad_lines.add(number)
                yield raw.decode("utf-8", "replace")

    with path.open("rb") as file:
        reader = csv.reader(decoded(file), delimiter=delimiter)
        end = 0
        while True:
            start = end + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                end = reader.line_num
                yield _CsvRecord(start, None, f"unreadable CSV row: {error}")
                continue
            end = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if bad_lines and any(line in bad_lines for line in range(start, end + 1)):
                bad_lines.clear()
                yield _CsvRecord(start, None, "not valid UTF-8 text; save the file as UTF-8")
                continue
            yield _CsvRecord(start, cells)


def _read_header(path: Path, delimiter: str) -> list[str]:
    for record in _csv_records(path, delimiter):
        if record.cells is None:
            raise ValueError(f"cannot read the header of {path.name}: {record.error}")
        return [name.strip() for name in record.cells]
    raise ValueError(f"{path.name} is empty; a CSV file starts with a header row")


def _read_csv(
    path: Path,
    delimiter: str,
    columns: _Columns,
    mapping: ColumnMapping,
) -> Iterator[Row | Rejected]:
    records = _csv_records(path, delimiter)
    next(records, None)  # the header, checked by read_items
    for record in records:
        if record.cells is None:
            yield Rejected(record.line, record.error)
            continue
        try:
            yield Row(record.line, _item_from_cells(record.cells, columns, mapping, delimiter))
        except _RecordError as error:
            yield Rejected(record.line, str(error))


def _item_from_cells(
    cells: list[str],
    columns: _Columns,
    mapping: ColumnMapping,
    delimiter: str,
) -> dict[str, Any]:
    if len(cells) > columns.width and any(cell.strip() for cell in cells[columns.width :]):
        raise _RecordError(
            f"the row has {len(cells)} cells but the header has {columns.width} columns; "
            f"quote cells that contain {delimiter!r}",
        )
    # Short rows are read as if their missing trailing cells were empty.
    cells = [cell.strip() for cell in cells]
    cells.extend([""] * (columns.width - len(cells)))
    metadata: dict[str, Any] = {}
    for name, position in columns.metadata:
        value = _cell_value(cells[position], mapping.list_separator)
        if value is not None:
            metadata[name] = value
    return _item(
        cells[columns.item_id],
        cells[columns.title],
        _join_text(cells[position] for position in columns.text),
        metadata,
        mapping=mapping,
        kind="column",
    )


def _cell_value(cell: str, list_separator: str | None) -> Any:
    """Turn a metadata cell into a number, a string, a list of strings or ``None`` if empty."""
    if not cell:
        return None
    if list_separator is not None and list_separator in cell:
        return _split(cell, list_separator) or None
    match = _NUMBER.fullmatch(cell)
    if match is None:
        return cell
    if match.group(1) is None and match.group(2) is None:
        number = int(cell)
        return number if abs(number) <= _MAX_INT else cell
    real = float(cell)
    return real if math.isfinite(real) else cell


# -- shared ---------------------------------------------------------------------------------


def _item(
    item_id: str,
    title: str,
    text: str,
    metadata: dict[str, Any],
    *,
    mapping: ColumnMapping,
    kind: Literal["key", "column"],
) -> dict[str, Any]:
    """Check a record against the limits of the items API and build its wire form."""
    # The places named in reasons are only spelled out for rejected records, which are rare.
    if not item_id.strip():
        raise _RecordError(f"missing item_id ({kind} {mapping.item_id!r})")
    shown = item_id if len(item_id) <= _SHOWN_ID_LENGTH else item_id[:_SHOWN_ID_LENGTH] + "..."
    if len(item_id) > MAX_ID_LENGTH:
        raise _RecordError(
            f"item_id {shown!r} is {len(item_id)} characters long; the limit is "
            f"{MAX_ID_LENGTH} ({kind} {mapping.item_id!r})",
        )
    if "/" in item_id:
        raise _RecordError(
            f"item_id {shown!r} contains '/', which ids cannot contain because they appear "
            f"in URL paths ({kind} {mapping.item_id!r})",
        )
    control = _CONTROL.search(item_id)
    if control is not None:
        raise _RecordError(
            f"item_id {shown!r} contains the control character U+{ord(control.group()):04X} "
            f"({kind} {mapping.item_id!r})",
        )
    if not title.strip():
        raise _RecordError(f"missing title ({kind} {mapping.title!r})")
    if len(title) > MAX_TITLE_LENGTH:
        raise _RecordError(
            f"title is {len(title)} characters long; the limit is {MAX_TITLE_LENGTH} "
            f"({kind} {mapping.title!r})",
        )
    if len(text) > MAX_TEXT_LENGTH:
        raise _RecordError(
            f"text is {len(text)} characters long; the limit is {MAX_TEXT_LENGTH} "
            f"({_names(kind, mapping.text)})",
        )
    if len(metadata) > MAX_METADATA_KEYS:
        raise _RecordError(
            f"metadata has {len(metadata)} keys; the limit is {MAX_METADATA_KEYS}",
        )
    bad_key = next((key for key in metadata if not _METADATA_KEY.fullmatch(key)), None)
    if bad_key is not None:
        raise _RecordError(
            f"metadata key {bad_key!r} may only use letters, digits, '_' and '-' (at most 128), "
            "because keys are also filter fields; rename it",
        )
    return {"item_id": item_id, "title": title, "text": text, "metadata": metadata}


def _join_text(parts: Iterable[str]) -> str:
    """Join text parts into sentences, skipping empty ones.

    A single part is kept as it is; a part already ending a sentence is not given a second
    full stop.
    """
    text = ""
    for part in parts:
        if not part.strip():
            continue
        if not text:
            text = part
            continue
        text = text.rstrip()
        text += " " if text.endswith((".", "!", "?")) else ". "
        text += part.strip()
    return text


def _split(value: str, separator: str) -> list[str] | str:
    if separator not in value:
        return value
    return [part.strip() for part in value.split(separator) if part.strip()]


def _names(kind: str, names: tuple[str, ...]) -> str:
    plural = "s" if len(names) > 1 else ""
    return f"{kind}{plural} {', '.join(repr(name) for name in names)}"


def _not_utf8(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not valid UTF-8 text (byte {error.start}); save the file as UTF-8"
    return "not valid UTF-8 text; save the file as UTF-8"
