"""Progress of the long row-by-row steps (``synth``, ``bulk-load``, the scale bench): rows done, rate, ETA.

To a terminal it is tqdm's redrawn bar; to a pipe or a log file (where a redrawn bar is one
endless line of carriage returns) it is one plain line every :data:`LOG_INTERVAL` seconds and
a last one at the end, for example::

    COPY raw_sales: 4,200,000 of 10,000,000 rows (42%), 151,234 rows/s, elapsed 00:27, ETA 00:38
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

#: Seconds between two progress lines when the output is not a terminal.
LOG_INTERVAL = 5.0


class RowProgress(tqdm):
    """A tqdm counter of rows that writes whole lines, not a redrawn bar, when its output is not a terminal."""

    def __init__(self, total: int, desc: str, *, disable: bool = False, file: TextIO | None = None) -> None:
        out = file if file is not None else sys.stderr
        self.to_terminal = bool(getattr(out, "isatty", lambda: False)())
        super().__init__(
            total=total, desc=desc, unit="rows", unit_scale=True, disable=disable, file=out,
            mininterval=0.1 if self.to_terminal else LOG_INTERVAL,
            # tqdm's monitor thread forces a redraw after maxinterval without one; in a log that
            # doubled lines next to update()'s own, so there it only steps in for a stalled count
            maxinterval=LOG_INTERVAL if self.to_terminal else 12 * LOG_INTERVAL, dynamic_ncols=self.to_terminal,
            leave=None if self.to_terminal else False,  # in a log the last line stays; close() must not erase it
        )

    def line(self) -> str:
        """The progress as one line of plain text: rows done of the total, share, mean rate, elapsed, ETA."""
        done, elapsed = self.n, self.format_dict["elapsed"]
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {done:,} of {self.total:,} rows ({done / self.total if self.total else 1:.0%})"
        if rate > 0:
            text += f", {rate:,.0f} rows/s, elapsed {self.format_interval(elapsed)}"
            text += f", ETA {self.format_interval((self.total - done) / rate)}"
        return text

    def display(self, msg: str | None = None, pos: int | None = None) -> bool | None:
        """Redraw the bar on a terminal; elsewhere write the current line (also for close()'s final display)."""
        if self.to_terminal:
            return super().display(msg, pos)
        self.fp.write(self.line() + "\n")
        self.fp.flush()
        return None
