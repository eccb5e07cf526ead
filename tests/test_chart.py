"""The digest's 14-day chart (bot/chart.py): a real PNG of the promised size, inside Telegram's photo
limits, counting incidents on the right local day; matplotlib loaded only when a chart is drawn."""

from __future__ import annotations

import struct
import subprocess
import sys
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from bot.chart import CHART_HEIGHT, CHART_WIDTH, daily_series, has_data, render_chart
from storage.metrics import DayIncident

BERLIN = ZoneInfo("Europe/Berlin")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _at(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def test_incidents_are_counted_on_their_local_day_with_that_days_accuracy() -> None:
    incidents = [
        DayIncident(_at(2026, 3, 28, 22, 30), "P0", corrected=False),  # 23:30 CET: the 28th in Berlin
        DayIncident(_at(2026, 3, 28, 23, 30), "P1", corrected=True),  # 00:30 CET: already the 29th
        DayIncident(_at(2026, 3, 29, 21, 59), "P1", corrected=False),  # 23:59 CEST (after the DST change)
        DayIncident(_at(2026, 3, 29, 22, 0), "P3", corrected=False),  # 00:00 CEST on the 30th: after the window
        DayIncident(_at(2026, 3, 15, 22, 59), "P2", corrected=False),  # 23:59 on the 15th: before it
        DayIncident(_at(2026, 3, 16, 9, 0), "P2", corrected=True),  # the window's first day
    ]
    series = daily_series(incidents, last_day=date(2026, 3, 29), tz=BERLIN)
    assert [d.day for d in series][0] == date(2026, 3, 16) and series[-1].day == date(2026, 3, 29)
    assert len(series) == 14
    by_day = {d.day: d for d in series}
    assert by_day[date(2026, 3, 28)].by_priority == {"P0": 1} and by_day[date(2026, 3, 28)].accuracy == 1.0
    last = by_day[date(2026, 3, 29)]
    assert last.by_priority == {"P1": 2} and last.total == 2 and last.accuracy == 0.5  # 1 of 2 corrected
    assert by_day[date(2026, 3, 16)].accuracy == 0.0
    assert by_day[date(2026, 3, 20)].total == 0 and by_day[date(2026, 3, 20)].accuracy is None  # a gap, not 0%
    assert has_data(series) and not has_data(daily_series([], last_day=date(2026, 3, 29), tz=BERLIN))


def test_the_chart_is_a_png_of_the_expected_size_inside_telegrams_photo_limits() -> None:
    incidents = [DayIncident(_at(2026, 3, 16 + n % 14, 10), f"P{n % 4}", corrected=n % 5 == 0) for n in range(200)]
    data = render_chart(daily_series(incidents, last_day=date(2026, 3, 29), tz=BERLIN))
    width, height = png_size(data)
    assert (width, height) == (CHART_WIDTH, CHART_HEIGHT) == (1200, 600)
    assert width + height <= 10_000 and max(width, height) / min(width, height) <= 20
    assert len(data) < 500_000  # Telegram takes 10 MB; a digest chart needs a few tens of KB
    assert data.endswith(b"IEND\xaeB`\x82")  # complete, not cut off


def test_an_empty_fortnight_still_draws() -> None:
    data = render_chart(daily_series([], last_day=date(2026, 3, 29), tz=BERLIN))
    assert png_size(data) == (CHART_WIDTH, CHART_HEIGHT)


def test_matplotlib_is_imported_only_when_a_chart_is_drawn() -> None:
    # bot.digest is what bot.app loads the chart through; bot.cli is the terminal's entry point.
    code = ("import sys, bot.digest, bot.chart, bot.cli; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start-up'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
