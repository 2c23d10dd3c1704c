"""Whether the features table was built from the current data set description, or needs a full rebuild.

``price_data.features`` is an incremental dbt model: a build replaces the rows of its partition
window and keeps the others, and dbt refuses a build whose columns differ from the table's
(``on_schema_change='fail'``). The table's comment holds the hash of the description it was
built from (written by the model's post-hook in the build's transaction); when it differs
from the current description's hash the next build rebuilds every partition with
``--full-refresh`` instead.

The table is UNLOGGED (``dbt/models/marts/features.sql``): it is derived from ``raw_sales``,
so it skips the write-ahead log, and a server crash leaves it empty. An empty table while
``raw_sales`` has rows is therefore rebuilt in full too.
"""

from __future__ import annotations

from price_platform.datasets import DatasetSpec
from price_platform.defs.features.project import description_hash
from price_platform.defs.resources import Warehouse

#: The features table and the prefix of its comment (``dbt/macros/dataset.macro.sql``).
FEATURES_TABLE = "price_data.features"
COMMENT_PREFIX = "price_platform dataset description "
#: What the features are built from.
RAW_SALES_TABLE = "price_data.raw_sales"


def stale_description(warehouse: Warehouse, spec: DatasetSpec) -> str | None:
    """Why the features table must be rebuilt in full for ``spec``; ``None`` when an incremental build fits.

    A missing table needs no full rebuild (the first build creates it).
    """
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute(
            "select to_regclass(%s) is not null, obj_description(to_regclass(%s), 'pg_class')",
            (FEATURES_TABLE, FEATURES_TABLE),
        )
        exists, comment = cursor.fetchone()
    if not exists:
        return None
    current = description_hash(spec)
    if comment is None or not comment.startswith(COMMENT_PREFIX):
        return f"{FEATURES_TABLE} records no data set description; rebuilding it for description {current}"
    built = comment.removeprefix(COMMENT_PREFIX)
    if built != current:
        return f"the data set description changed ({built} -> {current}); rebuilding every partition of {FEATURES_TABLE}"
    with warehouse.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"select not exists (select from {FEATURES_TABLE}) and exists (select from {RAW_SALES_TABLE})")
        (emptied,) = cursor.fetchone()
    if emptied:
        return f"{FEATURES_TABLE} is empty but raw_sales is not (an unlogged table after a server crash); rebuilding it"
    return None
