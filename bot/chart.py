"""The digest's chart: incidents per day by priority over the last 14 days (stacked bars), with
the day's triage accuracy as a line on a second axis, so a person sees the trend at a glance.

`daily_series` bins incidents by local day (pure); `render_chart` draws the PNG with matplotlib's
Agg canvas (headless: no display, no pyplot state). matplotlib is imported only when a chart is
drawn, so the bot's start-up and the CLI do not pay for it. The PNG is CHART_WIDTH x CHART_HEIGHT
pixels and a few tens of KB: far inside Telegram's photo limits (10 MB, width + height <= 10000,
side ratio <= 20).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.models import Priority
from storage.metrics import DayIncident

if TYPE_CHECKING:  # only for the annotations: matplotlib itself is imported when a chart is drawn
    from matplotlib.axes import Axes

CHART_DAYS = 14
CHART_WIDTH = 1200  # pixels
CHART_HEIGHT = 600
_DPI = 100
ACCURACY_TARGET = 0.90  # the seed's target, drawn as a dashed line
_COLOURS = {"P0": "#d62728", "P1": "#ff7f0e", "P2": "#f2c12e", "P3": "#7f9fbf"}


@dataclass(frozen=True)
class ChartDay:
    day: date
    by_priority: dict[str, int] = field(default_factory=dict)
    triaged: int = 0
    uncorrected: int = 0

    @property
    def total(self) -> int:
        return sum(self.by_priority.values())

    @property
    def accuracy(self) -> float | None:
        """Share of the day's incidents whose priority no human corrected; None on a day without any."""
        return self.uncorrected / self.triaged if self.triaged else None


def daily_series(incidents: Iterable[DayIncident], *, last_day: date, tz: ZoneInfo,
                 days: int = CHART_DAYS) -> list[ChartDay]:
    """`days` local days ending with `last_day`, oldest first; every day present, empty or not."""
    first_day = last_day - timedelta(days=days - 1)
    counts: dict[date, dict[str, int]] = {first_day + timedelta(days=n): {} for n in range(days)}
    corrected: dict[date, int] = dict.fromkeys(counts, 0)
    for incident in incidents:
        day = incident.first_seen.astimezone(tz).date()
        if day not in counts:
            continue
        counts[day][incident.priority] = counts[day].get(incident.priority, 0) + 1
        corrected[day] += incident.corrected
    return [ChartDay(day, by_priority, sum(by_priority.values()), sum(by_priority.values()) - corrected[day])
            for day, by_priority in counts.items()]


def has_data(series: list[ChartDay]) -> bool:
    return any(day.total for day in series)


def render_chart(series: list[ChartDay], *, title: str = "") -> bytes:
    """The PNG: stacked bars of incidents per priority per day; triage accuracy on the right axis."""
    # Imported here, not at the top: matplotlib costs about half a second to import.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(CHART_WIDTH / _DPI, CHART_HEIGHT / _DPI), dpi=_DPI)
    FigureCanvasAgg(figure)
    bars = figure.add_subplot()
    positions = list(range(len(series)))
    bottom = [0] * len(series)
    for priority in Priority:
        heights = [day.by_priority.get(priority.value, 0) for day in series]
        bars.bar(positions, heights, bottom=bottom, color=_COLOURS[priority.value], label=priority.value, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    bars.set_ylabel("incidents")
    bars.set_ylim(0, max(1, *bottom) * 1.25)
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    bars.set_xticks(positions, [f"{day.day:%a}\n{day.day:%d %b}" for day in series], fontsize=8)
    bars.grid(axis="y", alpha=0.3)
    _accuracy_axis(bars, positions, series)
    bars.set_title(title or f"Incidents per day by priority, last {len(series)} days", fontsize=11)
    bars.legend(loc="upper left", ncols=5, fontsize=8, frameon=False)
    figure.tight_layout()
    # Laid out now: with the layout engine tight_layout leaves behind, savefig would draw the whole
    # figure once more before drawing it for the PNG (a quarter of the CPU, the same pixels).
    figure.set_layout_engine(None)
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()


def _accuracy_axis(bars: Axes, positions: list[int], series: list[ChartDay]) -> None:
    """The triage accuracy line (days without incidents leave a gap) and its 90% target."""
    line = bars.twinx()
    values = [day.accuracy * 100 if day.accuracy is not None else float("nan") for day in series]
    line.plot(positions, values, color="#2b2b2b", marker="o", linewidth=1.8, label="triage accuracy")
    line.axhline(ACCURACY_TARGET * 100, color="#2b2b2b", linestyle=":", linewidth=1, alpha=0.6)
    line.set_ylim(0, 125)  # headroom above 100%: the legends sit there, clear of the line
    line.set_yticks([0, 20, 40, 60, 80, 100])
    line.set_ylabel("triage accuracy, % (dotted: 90% target)")
    line.legend(loc="upper right", fontsize=8, frameon=False)
