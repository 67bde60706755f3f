"""Rows of the bench's report: a figure, its baseline from the same run, the
ratio, and the issue's target beside it; the table and the JSON of them."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (p95: `fraction` 0.95)."""
    ordered = sorted(samples)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))  # ceil without floats
    return ordered[min(len(ordered), rank) - 1]


@dataclass
class Figure:
    """One measured thing: what it is, in which unit, median and p95 of its samples."""

    what: str
    unit: str
    median: float
    p95: float | None
    n: int

    @classmethod
    def of(cls, what: str, unit: str, samples: list[float], *, p95: bool = True) -> Figure:
        if not samples:
            raise ValueError(f"no samples of {what}")
        return cls(what, unit, statistics.median(samples),
                   percentile(samples, 0.95) if p95 and len(samples) > 1 else None,
                   len(samples))

    @classmethod
    def one(cls, what: str, unit: str, value: float) -> Figure:
        return cls(what, unit, value, None, 1)


@dataclass
class Row:
    """A row of the report; `figure` None when it cannot be measured yet
    (`note` says why). `ratio` is figure / baseline of the medians."""

    row: str
    figure: Figure | None
    baseline: Figure | None = None
    target: str = ""
    note: str = ""
    ratio: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.figure is not None and self.baseline is not None and self.baseline.median:
            self.ratio = self.figure.median / self.baseline.median


@dataclass
class Segment:
    """A part of the median submission's path: from one event to the next."""

    start: str
    end: str
    ms: float
    median_ms: float | None
    n: int
    within: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    breakdown: list[Segment] = field(default_factory=list)
    breakdown_notes: list[str] = field(default_factory=list)
    context: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return ""
    if unit == "ms" or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _figure_cells(figure: Figure | None) -> list[str]:
    if figure is None:
        return ["", "", "", ""]
    return [f"{figure.what} ({figure.unit})", _number(figure.median, figure.unit),
            _number(figure.p95, figure.unit), str(figure.n)]


def table(report: Report) -> str:
    """The report as Markdown tables: the rows, then the breakdown."""
    lines = ["| row | measured | median | p95 | n | baseline | median | p95 | n "
             "| ratio | target |",
             "| --- " * 11 + "|"]
    for row in report.rows:
        if row.figure is None:
            cells = [row.row, f"not available: {row.note}"] + [""] * 9
            cells[10] = row.target
        else:
            ratio = f"{row.ratio:.3g} x" if row.ratio is not None else ""
            cells = [row.row, *_figure_cells(row.figure), *_figure_cells(row.baseline),
                     ratio, row.target]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {row.row}: {row.note}" for row in report.rows
             if row.note and row.figure is not None]
    if notes:
        lines += ["", *notes]
    if report.breakdown:
        lines += ["", "Breakdown of the median submission (latency row), POST to answer:", "",
                  "| from | to | ms (median submission) | median ms (all runs) | n | of which |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for seg in report.breakdown:
            median = "" if seg.median_ms is None else f"{seg.median_ms:.1f}"
            lines.append(f"| {seg.start} | {seg.end} | {seg.ms:.1f} | {median} | {seg.n} "
                         f"| {seg.within} |")
    for note in report.breakdown_notes:
        lines.append(f"- {note}")
    return "\n".join(lines)
