"""What a benchmark reports: rows of measured value, bound, ratio and target, and the table.

A row compares one number of the mount with a bound measured in the same run. Its ratio is
what the target is checked against; rows without a target are shown for comparison only and
are not counted in the closing ``N/M targets met`` line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, slots=True)
class Target:
    """A limit on a row's ratio: ``<= limit`` or ``>= limit``."""

    op: Literal["<=", ">="]
    limit: float
    # How the limit reads in the table when the plain number would mislead ("<= +2").
    text: str | None = None

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def __str__(self) -> str:
        return self.text or f"{self.op} {self.limit:g}"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    benchmark: str
    measured: str
    bound: str
    ratio: float
    target: Target | None = None
    ratio_text: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.ratio)

    @property
    def ratio_label(self) -> str:
        if self.ratio_text is not None:
            return self.ratio_text
        if math.isnan(self.ratio):
            return "-"
        return f"{self.ratio:.3g}" if self.ratio < 1000 else f"{self.ratio:.0f}"


def failed_row(benchmark: str, error: BaseException, targets: int) -> list[Row]:
    """Rows for a benchmark that could not run: each of its targets counts as missed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: " + " | ".join(lines)[-400:]
    return [
        Row(
            benchmark,
            "error",
            "-",
            math.nan,
            Target("<=", math.nan, "not run"),
            details=[text],
        )
        for _ in range(max(1, targets))
    ]


def _met_label(row: Row) -> str:
    met = row.met
    if met is None:
        return "info"
    return "yes" if met else "NO"


def table(rows: Sequence[Row]) -> str:
    """The results as a text table, then the details, then ``N/M targets met``."""
    header = ("benchmark", "measured", "bound", "ratio", "target", "met")
    cells = [
        (row.benchmark, row.measured, row.bound, row.ratio_label, str(row.target or "-"),
         _met_label(row))
        for row in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(values, widths, strict=True))

    out = [line(header), line(["-" * width for width in widths])]
    out.extend(line(cell) for cell in cells)

    details = [(row.benchmark, text) for row in rows for text in row.details]
    if details:
        out.append("")
        out.append("details:")
        out.extend(f"  {name}: {text}" for name, text in details)

    counted = [row for row in rows if row.target is not None]
    met = sum(1 for row in counted if row.met)
    out.append("")
    out.append(f"{met}/{len(counted)} targets met")
    return "\n".join(out)


def write_json(path: Path, rows: Sequence[Row], context: dict[str, object]) -> None:
    """Keep the results for a report: the machine and options, then every row."""
    data = {
        "context": context,
        "rows": [
            {**asdict(row), "met": row.met, "target": str(row.target) if row.target else None}
            for row in rows
        ],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
