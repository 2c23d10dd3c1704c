"""The shape of one benchmark figure, as written to ``benchmarks/results.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Result:
    """One measured figure with its goal; ``met`` says whether the goal holds."""

    name: str
    value: float
    unit: str
    goal: str
    met: bool
    command: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
