"""``python -m price_platform.operations.migrate``: apply the platform's migrations, then exit.

The one-shot ``migrate`` service of docker-compose.yml runs it as the owner role before the
other services start, so that the API's and the exporter's roles, which may not create
tables, find the schema (and migration 012's grants) in place.
"""

from __future__ import annotations

import logging
import sys

from price_platform.postgres import ensure_server
from price_platform.settings import get_settings
from price_platform.warehouse import migrate


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    applied = migrate(ensure_server(get_settings()).dsn())
    print(f"{len(applied)} migrations applied" + (f": {', '.join(applied)}" if applied else " (schema up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
