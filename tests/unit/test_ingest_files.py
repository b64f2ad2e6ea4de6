"""Catalog files (JSON Lines, CSV, TSV) become wire-format items or line-numbered rejections."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from appliance.demo import MOVIELENS_CATALOG
from appliance.ingest_files import (
    ColumnMapping,
    Rejected,
    Row,
    batches,
    count_records,
    detect_format,
    read_items,
)
from appliance.schemas.items import ItemIn

if TYPE_CHECKING:
    from pathlib import Path

MOVIES_CSV = """\
movieId,name,overview,tagline,year,rating,genres,code,notes
1,Toy Story,Toys come alive.,To infinity,1995,8.3,Animation|Comedy,007,
2,Jumanji,,A game,1995,7.5,Adventure,12a,"multi
line note"
3,Heat,Cops and robbers,,1995,,Action | Crime |,-4,x
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_lines(path: Path, records: list[Any]) -> Path:
    return write(path, "".join(f"{json.dumps(record)}\n" for record in records))


def split(results: list[Row | Rejected]) -> tuple[list[Row], list[Rejected]]:
    rows = [result for result in results if isinstance(result, Row)]
    rejected = [result for result in results if isinstance(result, Rejected)]
    return rows, rejected


# -- JSON Lines -----------------------------------------------------------------------------


def test_jsonl_items_pass_through_with_their_metadata(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "items.jsonl",
        [
            {"item_id": "a", "title": "A", "text": "About A.", "metadata": {"year": 1, "t": ["x"]}},
            {"item_id": "b", "title": "B"},
        ],
    )

    results = list(read_items(path))

    assert results == [
        Row(
            1,
            {"item_id": "a", "title": "A", "text": "About A.", "metadata": {"year": 1, "t": ["x"]}},
        ),
        Row(2, {"item_id": "b", "title": "B", "text": "", "metadata": {}}),
    ]


def test_jsonl_without_a_metadata_object_uses_the_other_keys(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "items.ndjson",
        [{"item_id": 7, "title": "Seven", "year": 2001, "genre": "Drama", "gone": None}],
    )

    [row] = read_items(path)

    assert row == Row(
        1,
        {
            "item_id": "7",
            "title": "Seven",
            "text": "",
            "metadata": {"year": 2001, "genre": "Drama"},
        },
    )


def test_jsonl_with_an_explicit_mapping_reads_those_keys(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "items.jsonl",
        [{"id": 3, "name": "Three", "plot": "Plot.", "tag": "Short", "genres": "A|B", "x": 1}],
    )
    mapping = ColumnMapping(
        item_id="id",
        title="name",
        text=("plot", "tag", "missing"),
        metadata=("genres",),
        list_separator="|",
    )

    [row] = read_items(path, mapping)

    assert row == Row(
        1,
        {
            "item_id": "3",
            "title": "Three",
            "text": "Plot. Short",
            "metadata": {"genres": ["A", "B"]},
        },
    )


def test_the_demo_catalog_reads_completely_and_matches_the_api_schema() -> None:
    results = list(read_items(MOVIELENS_CATALOG))
    rows, rejected = split(results)

    assert len(rows) == 9742
    assert rejected == []
    assert rows[0].line == 1
    assert rows[-1].line == 9742
    for row in rows:
        msgspec.convert(row.item, ItemIn)


def test_bad_jsonl_lines_are_rejected_with_their_line_and_reading_goes_on(tmp_path: Path) -> None:
    lines = [
        json.dumps({"item_id": "ok-1", "title": "Fine"}),
        "",
        '{"item_id": "broken", "title": ',
        json.dumps({"item_id": "no-title"}),
        json.dumps({"item_id": "a/b", "title": "Slash"}),
        "[1, 2]",
        json.dumps({"item_id": "x" * 300, "title": "Long id"}),
        json.dumps({"item_id": "m", "title": "M", "metadata": ["not", "an", "object"]}),
        json.dumps({"item_id": "t", "title": "T", "text": "y" * 20_001}),
        json.dumps({"item_id": "n", "title": 5}),
        "   ",
        json.dumps({"item_id": "ok-2", "title": "Also fine"}),
    ]
    path = write(tmp_path / "items.jsonl", "\n".join(lines) + "\n")

    results = list(read_items(path))
    rows, rejected = split(results)

    assert [(row.line, row.item["item_id"]) for row in rows] == [(1, "ok-1"), (12, "ok-2")]
    assert [item.line for item in rejected] == [3, 4, 5, 6, 7, 8, 9, 10]
    reasons = [item.reason for item in rejected]
    assert reasons[0].startswith("invalid JSON: ")
    assert reasons[1] == "missing title (key 'title')"
    assert "contains '/'" in reasons[2]
    assert "'a/b'" in reasons[2]
    assert reasons[3] == "expected a JSON object, got array"
    assert "300 characters long; the limit is 256" in reasons[4]
    assert reasons[5] == "metadata must be a JSON object, got array (key 'metadata')"
    assert "20001 characters long; the limit is 20000" in reasons[6]
    assert reasons[7] == "title must be a string, got number (key 'title')"
    assert count_records(path) == len(results)


def test_jsonl_tolerates_a_byte_order_mark_and_rejects_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"item_id": "a", "title": "A"}\r\n{"item_id": "b", "title": "\xff"}\n',
    )

    results = list(read_items(path))

    assert results[0] == Row(1, {"item_id": "a", "title": "A", "text": "", "metadata": {}})
    assert isinstance(results[1], Rejected)
    assert results[1].line == 2
    assert "UTF-8" in results[1].reason


def test_control_characters_and_blank_ids_are_rejected(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "items.jsonl",
        [{"item_id": "tab\there", "title": "T"}, {"item_id": "  ", "title": "T"}],
    )

    reasons = [result.reason for result in read_items(path) if isinstance(result, Rejected)]

    assert reasons == [
        "item_id 'tab\\there' contains the control character U+0009 (key 'item_id')",
        "missing item_id (key 'item_id')",
    ]


# -- CSV ------------------------------------------------------------------------------------


def test_csv_with_a_mapping_converts_numbers_and_splits_lists(tmp_path: Path) -> None:
    path = write(tmp_path / "movies.csv", MOVIES_CSV)
    mapping = ColumnMapping(
        item_id="movieId",
        title="name",
        text=("overview", "tagline"),
        metadata=("year", "rating", "genres", "code", "notes"),
        list_separator="|",
    )

    results = list(read_items(path, mapping))

    assert results == [
        Row(
            2,
            {
                "item_id": "1",
                "title": "Toy Story",
                "text": "Toys come alive. To infinity",
                "metadata": {
                    "year": 1995,
                    "rating": 8.3,
                    "genres": ["Animation", "Comedy"],
                    "code": "007",
                },
            },
        ),
        Row(
            3,
            {
                "item_id": "2",
                "title": "Jumanji",
                "text": "A game",
                "metadata": {
                    "year": 1995,
                    "rating": 7.5,
                    "genres": "Adventure",
                    "code": "12a",
                    "notes": "multi\nline note",
                },
            },
        ),
        Row(
            5,
            {
                "item_id": "3",
                "title": "Heat",
                "text": "Cops and robbers",
                "metadata": {"year": 1995, "genres": ["Action", "Crime"], "code": -4, "notes": "x"},
            },
        ),
    ]
    for result in results:
        assert isinstance(result, Row)
        msgspec.convert(result.item, ItemIn)
    assert count_records(path) == 3


def test_csv_metadata_defaults_to_every_unused_column(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,title,year,kind\nk1,Kay,1999,\n")

    assert list(read_items(path)) == [
        Row(2, {"item_id": "k1", "title": "Kay", "text": "", "metadata": {"year": 1999}}),
    ]


def test_csv_rows_are_rejected_with_their_physical_line(tmp_path: Path) -> None:
    text = (
        "item_id,title,text\n"
        'one,First,"a text\n'
        'over two lines"\n'
        "\n"
        "two,,no title\n"
        "a/b,Slash,\n"
        "three,Third,too,many,cells\n"
        "four,Fourth\n"
    )
    path = write(tmp_path / "items.csv", text)

    results = list(read_items(path))
    rows, rejected = split(results)

    assert [(row.line, row.item["item_id"]) for row in rows] == [(2, "one"), (8, "four")]
    assert rows[0].item["text"] == "a text\nover two lines"
    assert (rejected[0].line, rejected[0].reason) == (5, "missing title (column 'title')")
    assert rejected[1].line == 6
    assert "contains '/'" in rejected[1].reason
    assert rejected[2].line == 7
    assert "5 cells but the header has 3 columns" in rejected[2].reason
    assert count_records(path) == len(results)


def test_tsv_files_use_a_tab_and_a_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "items.tsv"
    path.write_bytes("\ufeffitem_id\ttitle\tgenre\nx1\tA, with comma\tNoir\n".encode())

    assert list(read_items(path)) == [
        Row(
            2,
            {"item_id": "x1", "title": "A, with comma", "text": "", "metadata": {"genre": "Noir"}},
        ),
    ]


def test_a_semicolon_delimited_csv_is_recognised(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id;title;price\np;Pen;1.5\n")

    assert list(read_items(path)) == [
        Row(2, {"item_id": "p", "title": "Pen", "text": "", "metadata": {"price": 1.5}}),
    ]


@pytest.mark.parametrize(
    ("mapping", "column"),
    [
        (ColumnMapping(metadata=("year", "director")), "'director'"),
        (ColumnMapping(item_id="movieId"), "'movieId'"),
        (ColumnMapping(title="name"), "'name'"),
        (ColumnMapping(text=("overview",)), "'overview'"),
    ],
)
def test_a_mapped_column_missing_from_the_header_fails_before_reading(
    tmp_path: Path,
    mapping: ColumnMapping,
    column: str,
) -> None:
    path = write(tmp_path / "items.csv", "item_id,title,year\na,A,2000\n")

    with pytest.raises(ValueError, match=column) as raised:
        read_items(path, mapping)  # not iterated: the header is checked on the call

    assert "'item_id', 'title', 'year'" in str(raised.value)


def test_an_empty_csv_file_has_no_header(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "\n\n")

    with pytest.raises(ValueError, match="header"):
        read_items(path)
    assert count_records(path) == 0


def test_a_string_instead_of_a_tuple_of_columns_is_refused() -> None:
    with pytest.raises(TypeError, match="tuple"):
        ColumnMapping(text="overview")  # type: ignore[arg-type]


# -- formats and counting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json-lines", "jsonl"),
        ("A.JSONL", "jsonl"),
        ("a.csv", "csv"),
        ("a.tsv", "csv"),
    ],
)
def test_detect_format_by_suffix(tmp_path: Path, name: str, expected: str) -> None:
    assert detect_format(tmp_path / name) == expected


@pytest.mark.parametrize("name", ["a.json", "a.txt", "catalog"])
def test_detect_format_lists_the_supported_suffixes(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.jsonl, \.ndjson, \.json-lines, \.csv, \.tsv"):
        detect_format(tmp_path / name)


def test_an_explicit_format_overrides_the_suffix(tmp_path: Path) -> None:
    path = write(tmp_path / "items.txt", "item_id\ttitle\nz\tZed\n")

    assert list(read_items(path, fmt="tsv")) == [
        Row(2, {"item_id": "z", "title": "Zed", "text": "", "metadata": {}}),
    ]
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        read_items(path, fmt="xml")


def test_count_records_skips_blank_lines_and_the_header(tmp_path: Path) -> None:
    jsonl = write(tmp_path / "a.jsonl", '{"x": 1}\n\n  \n{"x": 2}\nnot json\n')
    csv_file = write(tmp_path / "a.csv", 'item_id,title\n\na,"A\nB"\nb,B\n')

    assert count_records(jsonl) == 3
    assert count_records(csv_file) == 2
    assert count_records(MOVIELENS_CATALOG) == 9742


def test_a_missing_file_fails_on_the_call(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_items(tmp_path / "absent.jsonl")


def _row(line: int, item_id: str, title: str = "t") -> Row:
    return Row(line, {"item_id": item_id, "title": title, "text": "", "metadata": {}})


def test_batches_cap_the_size_and_carry_rejected_records() -> None:
    records: list[Row | Rejected] = [
        _row(1, "a"),
        Rejected(2, "missing title"),
        _row(3, "b"),
        _row(4, "c"),
        Rejected(5, "bad"),
    ]
    grouped = list(batches(records, 2))
    assert [[i["item_id"] for i in b.items] for b in grouped] == [["a", "b"], ["c"]]
    assert [[r.line for r in b.rejected] for b in grouped] == [[2], [5]]


def test_a_repeated_id_starts_a_new_batch_so_the_later_line_wins() -> None:
    records: list[Row | Rejected] = [_row(1, "a", "old"), _row(2, "b"), _row(3, "a", "new")]
    grouped = list(batches(records, 10))
    assert [[(i["item_id"], i["title"]) for i in b.items] for b in grouped] == [
        [("a", "old"), ("b", "t")],
        [("a", "new")],
    ]


def test_batches_of_only_rejected_records_are_still_reported() -> None:
    grouped = list(batches([Rejected(1, "bad")], 10))
    assert [(b.items, [r.line for r in b.rejected]) for b in grouped] == [([], [1])]
