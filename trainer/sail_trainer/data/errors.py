"""The one error for bad input data: it names the file, the row and the column, and says how to fix it.

The phase CLI maps `DataError` to the non-retryable BAD_DATA exit code
(`sail_api.phases.ExitCode.BAD_DATA`): retrying cannot fix a corrupt image or a missing column.
Transient storage errors (`sail_api.storage.StorageUnavailable`) are *not* wrapped here.
"""

from __future__ import annotations

from typing import Literal

RowKind = Literal["row", "line"]


class DataError(Exception):
    """A dataset file that cannot be used as given.

    Attributes:
        source: the file (path or URI) at fault.
        row: the record at fault, or None for a whole-file problem. For line-based files
            (text, JSONL) it is the 1-based line number (`row_kind == "line"`); for Parquet
            the 0-based row index (`row_kind == "row"`).
        field: the column/key at fault, or None.
        hint: how to fix it, or None.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
        row_kind: RowKind = "row",
    ) -> None:
        self.message = message
        self.source = source
        self.row = row
        self.field = field
        self.hint = hint
        self.row_kind = row_kind
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.source
        if self.row is not None:
            where += f", {self.row_kind} {self.row}"
        if self.field is not None:
            where += f", column {self.field!r}"
        text = f"{where}: {self.message}"
        return f"{text}. {self.hint}" if self.hint else text

    def __reduce__(self):  # keyword-only arguments: make the error picklable across processes
        return (_rebuild, (self.message, self.source, self.row, self.field, self.hint, self.row_kind))


def _rebuild(message: str, source: str, row: int | None, field: str | None, hint: str | None,
             row_kind: RowKind) -> DataError:
    return DataError(message, source=source, row=row, field=field, hint=hint, row_kind=row_kind)
