"""The CSV layer of a sensor table: which files, the delimiter, the header, and the rows with their line numbers."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from edgevae.core.errors import DataError


class TableError(DataError, ValueError):
    """A sensor table cannot be read; the message names the file, the line and what was expected."""


def csv_paths(path: str | Path) -> list[Path]:
    """One file, or every *.csv under a folder (recursively), in sorted path order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.csv") if p.is_file())
        if not files:
            msg = f"{path}: expected a .csv file or a folder containing .csv files, found no .csv files"
            raise TableError(msg)
        return files
    if not path.exists():
        msg = f"{path}: no such file or folder; expected a .csv file or a folder of them"
        raise FileNotFoundError(msg)
    return [path]


def read_header(path: str | Path) -> list[str]:
    """The column names of a CSV file, without reading its rows."""
    with Path(path).open(encoding="utf-8-sig", newline="") as fh:
        for line in fh:
            if line.strip():
                return [cell.strip() for cell in next(csv.reader([line], delimiter=_delimiter(line)))]
    return []


def parse_csv(path: Path) -> tuple[list[str], int, list[list[str]], list[int]]:
    """The header, its line, the data rows and the line of each; blank lines are skipped."""
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first header name.
    text = path.read_text(encoding="utf-8-sig")
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    reader = csv.reader(io.StringIO(text), delimiter=_delimiter(first_line))
    header: list[str] = []
    header_line = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if not header:
            header, header_line = [cell.strip() for cell in row], reader.line_num
        elif len(row) != len(header):
            raise error(path, reader.line_num, f"expected {len(header)} fields as in the header, got {len(row)}")
        else:
            rows.append(row)
            lines.append(reader.line_num)
    if not header:
        msg = f"{path}: empty file; expected a header line and data rows"
        raise TableError(msg)
    if not rows:
        raise error(path, header_line, "expected data rows after the header, found none")
    return header, header_line, rows, lines


def error(path: Path, line: int, expected: str, remedy: str | None = None) -> TableError:
    return TableError(f"{path}: line {line}: {expected}", remedy=remedy)


def _delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","
