"""A record the model cannot price is the client's problem (422 naming it), never a 5xx or an infinite price."""

from __future__ import annotations

import numpy as np
import pytest

from serving.services import UnpriceableRecords, checked


def test_finite_positive_prices_pass_through() -> None:
    assert checked(np.array([1.5e5, 2.0e5])).tolist() == [1.5e5, 2.0e5]


@pytest.mark.parametrize("bad", [np.inf, np.nan, 0.0, -3.0])
def test_a_price_that_is_not_finite_and_positive_names_its_record(bad: float) -> None:
    with pytest.raises(UnpriceableRecords) as raised:
        checked(np.array([1.5e5, bad, 2.0e5, bad]))
    assert raised.value.records == [1, 3]
    assert str(raised.value).startswith("record 1: the model gives no finite price")
