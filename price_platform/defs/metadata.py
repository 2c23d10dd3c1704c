"""Dagster metadata values the assets attach: tables as markdown, plots as inline PNG images."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:  # both are imported by whoever draws or tabulates, not by every Dagster process
    import pandas as pd
    from matplotlib.figure import Figure


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> dg.MetadataValue:
    """``frame`` rounded to ``digits`` as a markdown table (rendered in the asset's metadata panel)."""
    return dg.MetadataValue.md(frame.round(digits).to_markdown())


def png(figure: Figure) -> dg.MetadataValue:
    """``figure`` as an inline PNG image (shown in the Dagster UI without opening MLflow)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return dg.MetadataValue.md(f"![plot](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()})")
