"""PII in the prediction log: replaced by an HMAC under a secret key, not a bare hash anyone can recompute."""

from __future__ import annotations

import hashlib
import hmac
import stat
import uuid
from datetime import UTC, datetime

import msgspec
import psycopg2

from price_platform.settings import Settings
from serving.prediction_log import PII_KEY_FILE, LoggedPredictions, PredictionLog, pii_key


class Owned(msgspec.Struct, kw_only=True):
    area: float
    owner: str | None


def test_pii_is_stored_as_an_hmac_under_the_key(postgres) -> None:
    key = b"k" * 32
    log = PredictionLog(postgres.dsn(), capacity=10, pii=["owner"], pii_key=key)
    batch = LoggedPredictions(
        [uuid.uuid4()], datetime.now(UTC), "1", [Owned(area=1.0, owner="Jane Doe")], [1.0], [0.9], [1.1], 0.1, None
    )
    log.add(batch)
    log.start()
    log.stop(timeout=30.0)
    with psycopg2.connect(postgres.dsn()) as connection, connection.cursor() as cursor:
        cursor.execute("select features::text from monitoring.predictions where prediction_id = %s", (str(batch.prediction_ids[0]),))
        [(features,)] = cursor.fetchall()
    stored = msgspec.json.decode(features)["owner"]
    assert stored == hmac.new(key, b"Jane Doe", hashlib.sha256).hexdigest()
    assert stored != hashlib.sha256(b"Jane Doe").hexdigest()


def test_the_pii_key_is_made_once_kept_private_and_overridable(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    first = pii_key(settings)
    assert len(first) == 64 and pii_key(settings) == first
    path = tmp_path / PII_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text().strip().encode() == first
    assert pii_key(settings.model_copy(update={"pii_hmac_key": "from-the-environment"})) == b"from-the-environment"
