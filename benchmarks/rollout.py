"""Error rates of the rollout's sequential gate, by simulation, beside a peeked t-test.

Each simulated run is a stream of requests whose prices become known one by one; champion and
challenger log errors are bivariate normal (RMSLE ``SIGMA``, correlation ``CORRELATION``: two
models trained on the same sales err alike). *A/A*: the challenger is as good as the champion,
so any promotion is false. *Better*: its log errors are 5% smaller, so its RMSLE is 5% lower.
The gate (:class:`price_platform.rollout.sequential.SequentialTest`, defaults) sees every pair;
the peer is what a team does without a sequential test: a two-sided z-test at level 0.05
looked at every ``PEEK_EVERY`` pairs, promoting at the first significant look.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.results import Result
from price_platform.rollout.sequential import Decision, SequentialTest, first_crossing

RUNS = 1_000
SIGMA = 0.13
CORRELATION = 0.8
BETTER = 0.95
HARD = 0.6
PEEK_EVERY = 100
CHUNK = 50
COMMAND = "make bench BENCH=rollout"


def differences(rng: np.random.Generator, runs: int, pairs: int, scale: float, hard: float = 0.0) -> np.ndarray:
    """``runs`` x ``pairs`` paired differences ``e_champion² - e_challenger²`` (challenger errors x ``scale``).

    ``hard`` > 0 makes some requests harder for both models: their errors share a lognormal
    factor of that log-spread (heavier tails than normal errors).
    """
    champion = rng.standard_normal((runs, pairs))
    own = rng.standard_normal((runs, pairs))
    challenger = (CORRELATION * champion + math.sqrt(1 - CORRELATION**2) * own) * scale
    factor = np.exp(hard * rng.standard_normal((runs, pairs)) - hard * hard) if hard else 1.0
    return (SIGMA * factor) ** 2 * (champion * champion - challenger * challenger)


def gate_outcomes(test: SequentialTest, scale: float, seed: int, hard: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Decision and pairs at the decision of :data:`RUNS` simulated runs (up to ``test.max_pairs`` each)."""
    rng = np.random.default_rng(seed)
    decisions, counts = [], []
    for start in range(0, RUNS, CHUNK):
        block = differences(rng, min(CHUNK, RUNS - start), test.max_pairs, scale, hard)
        lower, upper = test.bounds(block)
        for row in range(len(block)):
            index, decision = first_crossing(lower[row], upper[row], test.min_pairs, test.max_pairs)
            decisions.append(decision)
            counts.append(index + 1)
    return np.array(decisions), np.array(counts)


def peeked_z_test(scale: float, seed: int, pairs: int) -> np.ndarray:
    """Whether a z-test looked at every :data:`PEEK_EVERY` pairs ever declared the challenger better."""
    rng = np.random.default_rng(seed)
    promoted = []
    looks = np.arange(PEEK_EVERY, pairs + 1, PEEK_EVERY)
    for start in range(0, RUNS, CHUNK):
        block = differences(rng, min(CHUNK, RUNS - start), pairs, scale)
        total = np.cumsum(block, axis=1)[:, looks - 1]
        squares = np.cumsum(block * block, axis=1)[:, looks - 1]
        mean = total / looks
        std = np.sqrt((squares - looks * mean * mean) / (looks - 1))
        promoted.append(np.any(mean / (std / np.sqrt(looks)) > 1.959964, axis=1))
    return np.concatenate(promoted)


def run() -> list[Result]:
    test = SequentialTest()
    aa_decisions, aa_counts = gate_outcomes(test, 1.0, seed=1)
    false_promotion = float(np.mean(aa_decisions == Decision.PROMOTE))
    by_test = (aa_decisions == Decision.ROLLBACK) & (aa_counts < test.max_pairs)
    at_budget = float(np.mean(aa_counts == test.max_pairs))
    heavy = float(np.mean(gate_outcomes(test, 1.0, seed=4, hard=HARD)[0] == Decision.PROMOTE))
    peer_false = float(np.mean(peeked_z_test(1.0, seed=1, pairs=test.max_pairs)))
    better_decisions, better_counts = gate_outcomes(test, BETTER, seed=2)
    promoted = better_decisions == Decision.PROMOTE
    # Runs that never promoted count as needing more than the budget.
    median = float(np.median(np.where(promoted, better_counts, np.iinfo(np.int64).max)))
    sample = differences(np.random.default_rng(3), 1, 1_000_000, BETTER)[0]
    fixed_n = ((1.959964 + 0.841621) * sample.std() / sample.mean()) ** 2
    print(
        f"A/A, {RUNS} runs of up to {test.max_pairs} pairs (alpha {test.alpha}, min {test.min_pairs} pairs):"
        f" false promotions {false_promotion:.3f}, rolled back as worse {by_test.mean():.3f},"
        f" rolled back at the budget {at_budget:.3f}"
    )
    print(f"A/A with heavy-tailed errors (a shared lognormal factor, log-spread {HARD}): false promotions {heavy:.3f}")
    print(f"peer, z-test peeked every {PEEK_EVERY} pairs: false promotions {peer_false:.3f}"
          f" ({peer_false / max(false_promotion, 1 / RUNS):.1f}x the gate's)")
    print(
        f"challenger 5% better in RMSLE: promoted in {promoted.mean():.3f} of runs, wrongly rolled back in"
        f" {np.mean((better_decisions == Decision.ROLLBACK) & (better_counts < test.max_pairs)):.3f};"
        f" median pairs to promotion {median:.0f}; a fixed-sample z-test with 80% power needs {fixed_n:.0f}"
        f" pairs decided once ({median / fixed_n:.2f}x)"
    )
    return [
        Result("rollout_false_promotion_rate", false_promotion, "share", "<= 0.05 over 1,000 A/A runs",
               false_promotion <= 0.05, COMMAND),
        Result("rollout_detection_median_samples", median, "pairs", "reported (5% lower RMSLE)",
               bool(promoted.mean() > 0.5), COMMAND),
    ]
