"""The CSV layer of a sensor table: which files, the delimiter, the header, and the rows with their line numbers."""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


@dataclass(frozen=True)
class CsvBlock:
    """Data rows of a CSV file: their cells row after row in one list (`width` a row), and the line of each."""

    cells: list[str]
    width: int
    lines: np.ndarray  # (rows,) int64

    @property
    def rows(self) -> int:
        return len(self.lines)

    def column(self, c: int) -> list[str]:
        return self.cells[c :: self.width]

    def cell(self, row: int, c: int) -> str:
        return self.cells[row * self.width + c]


class CsvBlocks:
    """A CSV file's header, then its data rows in blocks of at most `block_lines` lines, each row with its line.

    Blank lines (and rows of empty cells) are skipped but counted, so line numbers are the file's. A block
    without a quote character is split on the delimiter at once; one with quotes goes through the csv module,
    which may read on past the block to finish a quoted field that spans lines.
    """

    def __init__(self, path: Path, block_lines: int) -> None:
        if block_lines < 1:
            msg = f"block_lines must be >= 1, got {block_lines}"
            raise ValueError(msg)
        self.path = path
        self.block_lines = block_lines
        # utf-8-sig drops the byte-order mark that spreadsheet exports put before the first header name;
        # text mode reads \r\n and \r line ends as \n, as the whole-file reader always has.
        self._fh = path.open(encoding="utf-8-sig")
        self._line = 0  # lines read so far
        self.rows = 0  # data rows yielded so far
        try:
            self.header, self.header_line = self._read_header()
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        self._fh.close()

    def blocks(self) -> Iterator[CsvBlock]:
        """The data rows, a block at a time; raises at the end if there were none."""
        while lines := list(itertools.islice(self._fh, self.block_lines)):
            text = "".join(lines)
            block = self._quoted(lines) if '"' in text or "\0" in text else self._plain(text, len(lines))
            self.rows += block.rows
            if block.rows:
                yield block
        if self.rows == 0:
            raise error(self.path, self.header_line, "expected data rows after the header, found none")

    def _read_header(self) -> tuple[list[str], int]:
        for line in self._fh:
            self._line += 1
            first = next((part for part in line.splitlines() if part.strip()), None)
            if first is not None:
                break
        else:
            first = None
        if first is not None:
            self.delimiter = _delimiter(first)
            before = self._line - 1
            reader = csv.reader(itertools.chain([line], self._fh), delimiter=self.delimiter)
            for row in reader:
                if any(cell.strip() for cell in row):
                    self._line = before + reader.line_num
                    return [cell.strip() for cell in row], self._line
        msg = f"{self.path}: empty file; expected a header line and data rows"
        raise TableError(msg)

    def _plain(self, text: str, count: int) -> CsvBlock:
        first = self._line + 1
        self._line += count
        rows = text.split("\n")
        if text.endswith("\n"):
            rows.pop()
        numbers = np.arange(first, first + len(rows), dtype=np.int64)
        width, delimiter = len(self.header), self.delimiter
        fields = np.fromiter(map(str.count, rows, itertools.repeat(delimiter)), np.int64, len(rows)) + 1
        # A blank row is skipped, whatever its delimiters; a row of another width that is not blank is an error.
        # Only a row whose first cell is blank can be blank.
        odd = set(np.flatnonzero(fields != width).tolist())
        maybe = odd | (_blank_first(rows, delimiter) if _starts_blank(rows, text, delimiter) else set())
        blank = [i for i in maybe if not rows[i].replace(delimiter, "").strip()]
        for i in sorted(odd - set(blank)):
            raise error(self.path, int(numbers[i]), f"expected {width} fields as in the header, got {fields[i]}")
        if blank:
            keep = np.ones(len(rows), dtype=bool)
            keep[blank] = False
            rows = [row for row, kept in zip(rows, keep.tolist(), strict=True) if kept]
            numbers = numbers[keep]
        return CsvBlock(delimiter.join(rows).split(delimiter) if rows else [], width, numbers)

    def _quoted(self, lines: list[str]) -> CsvBlock:
        before = self._line
        reader = csv.reader(itertools.chain(lines, self._fh), delimiter=self.delimiter)
        rows: list[list[str]] = []
        numbers: list[int] = []
        while reader.line_num < len(lines):
            row = next(reader, None)
            if row is None:
                break
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(self.header):
                expected = f"expected {len(self.header)} fields as in the header, got {len(row)}"
                raise error(self.path, before + reader.line_num, expected)
            rows.append(row)
            numbers.append(before + reader.line_num)
        self._line = before + reader.line_num
        return CsvBlock(list(itertools.chain.from_iterable(rows)), len(self.header), np.array(numbers, dtype=np.int64))


def error(path: Path, line: int, expected: str, remedy: str | None = None) -> TableError:
    return TableError(f"{path}: line {line}: {expected}", remedy=remedy)


# A line that starts with a space or a delimiter, or is empty: one scan of a block tells whether it has any.
_LINE_STARTS_BLANK = {d: re.compile(rf"^[\s{re.escape(d)}]", re.MULTILINE) for d in (",", ";")}


def _starts_blank(rows: list[str], text: str, delimiter: str) -> bool:
    """Whether a row may start with a blank cell: it is empty, or starts with a space or the delimiter."""
    if not text.isascii():
        return _LINE_STARTS_BLANK[delimiter].search(text) is not None
    # Every ASCII space sorts at or before " ", so the least row tells whether any row starts with one.
    return not rows or min(rows)[:1] <= " " or text.startswith(delimiter) or "\n" + delimiter in text


def _blank_first(rows: list[str], delimiter: str) -> set[int]:
    """Rows whose first cell is empty or spaces."""
    return {i for i, row in enumerate(rows) if not row.partition(delimiter)[0].strip()}


def _delimiter(header_line: str) -> str:
    return ";" if header_line.count(";") > header_line.count(",") else ","
