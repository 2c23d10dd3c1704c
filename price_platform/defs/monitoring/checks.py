"""Checks of the monitoring assets."""

import dagster as dg

from price_platform.defs.monitoring.assets import LIVE_PERFORMANCE
from price_platform.defs.monitoring.resources import Monitoring
from price_platform.defs.resources import Warehouse


@dg.asset_check(asset=LIVE_PERFORMANCE, description="No served version's live accuracy fell past the allowed drop.")
def accuracy_holds(warehouse: Warehouse, monitoring: Monitoring) -> dg.AssetCheckResult:
    """Warns when a version's latest live week is less accurate than its baseline by more than the threshold."""
    from price_platform.monitoring import live_performance as live

    with warehouse.connect() as connection:
        drops = live.accuracy_drops(connection, live.stored_errors(connection), monitoring.accuracy_drop_threshold)
    return dg.AssetCheckResult(
        passed=not drops,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "threshold": monitoring.accuracy_drop_threshold,
            "drops": dg.MetadataValue.md(
                "\n".join(
                    f"- version {d.model_version}, week {d.week}: accuracy {d.live_accuracy:.3f}"
                    f" vs {d.baseline} {d.baseline_accuracy:.3f} ({d.drop:.1%} drop)"
                    for d in drops
                ) or "none"
            ),
        },
    )
