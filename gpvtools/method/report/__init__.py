"""Value profiles as a report: one self-contained HTML page (inline SVG charts) and PNG charts.

Reads gpv-aggregate's profiles (profiles) and, optionally, the scored perceptions behind them, the
evidence (evidence); the Report (content) is what both outputs show: the page (html, its charts from
svg) and the PNG files (png). Nothing here knows about click.
"""

from .content import CIRCLE, COMMAND, Report
from .evidence import Evidence
from .html import NOT_RECORDED, render_html
from .png import pyplot, write_pngs
from .profiles import read_profiles

__all__ = ["CIRCLE", "COMMAND", "NOT_RECORDED", "Evidence", "Report", "pyplot", "read_profiles", "render_html",
           "write_pngs"]
