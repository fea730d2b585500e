"""How `acr` prints results: `--output json|table|tsv|none` and `--query` (a JMESPath expression, as `az` has).

Pure functions of the data, so they are unit tested without a service. The query applies first, then the
format, as in az. A command may give a table view (the columns worth reading for its resource); it is used
only when there is no `--query`, since a query already chose what to show.

- json: indented JSON; nothing at all for a null result (a command with nothing to say prints nothing).
- table: a header row, a row of dashes, one row per item, columns two spaces apart; a nested object or
  list is left out (as az does), a lone value or a list of values gets the column `Result`.
- tsv: as az's, no header, one line per item, its fields tab-separated: for `cut` and `read`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import jmespath
import typer
from jmespath.exceptions import JMESPathError

TableView = Callable[[Any], list[dict[str, Any]]]


class OutputFormat(enum.StrEnum):
    JSON = "json"
    TABLE = "table"
    TSV = "tsv"
    NONE = "none"  # az's: nothing printed (the exit code says how it went)


def compile_query(query: str | None) -> str | None:
    """The query if it parses; a usage error (exit 2) before anything is sent otherwise."""
    if query is None:
        return None
    try:
        jmespath.compile(query)
    except JMESPathError as error:
        raise typer.BadParameter(f"not a JMESPath expression: {' '.join(str(error).split())}") from error
    return query


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", case_sensitive=False, help="json (default), table, tsv or none"),
]
QueryOption = Annotated[
    str | None,
    typer.Option("--query", help="JMESPath query applied to the result, as az's --query", callback=compile_query),
]


def apply_query(data: Any, query: str | None) -> Any:
    return jmespath.search(query, data) if query else data


def render(data: Any, fmt: OutputFormat, query: str | None = None, table_view: TableView | None = None) -> str:
    """The text to print for `data` (ending in a newline), or "" when there is nothing to print."""
    result = apply_query(data, query)
    if result is None or fmt is OutputFormat.NONE:
        return ""
    if fmt is OutputFormat.JSON:
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if fmt is OutputFormat.TSV:
        return "".join(line + "\n" for line in tsv_lines(result))
    rows = table_view(result) if (table_view is not None and query is None) else table_rows(result)
    return format_table(rows)


def cell(value: Any) -> str:
    """A scalar as a table or tsv cell: True/False as az prints them, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value).replace("\t", " ").replace("\n", " ")


def _scalar(value: Any) -> bool:
    return not isinstance(value, Mapping | list | tuple)


def _heading(key: str) -> str:
    return key[:1].upper() + key[1:]


def table_rows(result: Any) -> list[dict[str, Any]]:
    """Rows of a result without a view of its own: the scalar fields of each object, with headings."""
    items: Sequence[Any] = result if isinstance(result, list) else [result]
    if all(_scalar(item) for item in items):
        return [{"Result": item} for item in items]
    columns: dict[str, None] = {}  # ordered as first seen
    for item in items:
        if isinstance(item, Mapping):
            columns.update((key, None) for key, value in item.items() if _scalar(value))
    return [
        {_heading(key): item.get(key) for key in columns} if isinstance(item, Mapping) else {"Result": item}
        for item in items
    ]


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    headings: dict[str, None] = {}
    for row in rows:
        headings.update((key, None) for key in row)
    names = list(headings)
    cells = [[cell(row.get(name)) for name in names] for row in rows]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(names)]
    lines = [names, ["-" * width for width in widths], *cells]
    return "".join("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip() + "\n"
                   for line in lines)  # fmt: skip


def tsv_lines(result: Any) -> list[str]:
    """az's tsv: a top-level list is one line per item; within a line, a nested list is its length and a
    nested object is empty, so that columns keep their places from one line to the next."""
    items: Sequence[Any] = result if isinstance(result, list) else [result]
    return ["\t".join(_tsv_cell(value) for value in _fields(item)) for item in items]


def _fields(item: Any) -> Sequence[Any]:
    if isinstance(item, Mapping):
        return list(item.values())
    if isinstance(item, list | tuple):
        return item
    return [item]


def _tsv_cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        return str(len(value))
    if isinstance(value, Mapping):
        return ""
    return cell(value)
