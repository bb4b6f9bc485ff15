"""Claims as data: every result a lesson's prose relies on is checked by the run that produces it.

A claim is the measured value, what it is compared with (an exact answer, a floor, a baseline measured in
the same run, a published constant), the comparison and its tolerance, and the one sentence of the lesson it
supports. The run prints its verdict where the section prints its numbers::

    claim  8 Gaussians NLL within 0.10 nats of the entropy floor: 3.60 ± 0.02 vs 3.53 (within 0.10)   HOLDS

records it in ``metrics.json`` under ``"claims"``, and prints every verdict again in the end-of-lesson
summary (``LessonRun.finish``). A ``--quick`` run records its claims too, marked ``"meaningful": false``.

Where a claim compares two methods whose gap is not many standard errors wide in one run, measure both over
several seeds with ``over_seeds`` and pass the ``SeedStats``: a ``"<"`` or ``">"`` claim between two
``SeedStats`` then holds only if the gap of the means exceeds ``sigmas`` standard errors of the difference.

The comparisons (``op``):

- ``"<"``, ``">"``: measured below / above ``reference + tolerance`` (a negative tolerance gives slack to ``">"``,
  a positive one demands a margin);
- ``"within"``: ``|measured - reference| <= tolerance``;
- ``"within_rel"``: ``|measured - reference| <= tolerance * |reference|``;
- ``"ratio<"``: ``measured < tolerance * reference`` (e.g. "MMD below twice its noise floor").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

OPS = ("<", ">", "within", "within_rel", "ratio<")


@dataclass(frozen=True)
class SeedStats:
    """A number measured over several seeds: the values, their mean and the standard error of the mean."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def se(self) -> float:
        # SE = s / sqrt(n), s the sample standard deviation (n - 1 in the denominator)
        if self.n < 2:
            return float("nan")
        var = sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1)
        return math.sqrt(var / self.n)

    def __str__(self) -> str:
        return f"{_fmt(self.mean)} ± {self.se:.2g}"

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "se": self.se, "n_seeds": self.n, "values": list(self.values)}


def over_seeds(fn: Callable[[int], Any], seeds: Iterable[int]) -> Any:
    """Run ``fn(seed)`` for every seed; a float result becomes one ``SeedStats``, a dict of floats a dict of them.

    The caller makes ``fn`` small enough that the seeds fit the lesson's budget: shrink the runs, not the seeds.
    """
    results = [fn(int(seed)) for seed in seeds]
    if isinstance(results[0], dict):
        return {key: SeedStats(tuple(float(r[key]) for r in results)) for key in results[0]}
    return SeedStats(tuple(float(r) for r in results))


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "nan"
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _split(value) -> tuple[float, float | None]:
    if isinstance(value, SeedStats):
        return value.mean, value.se
    return float(value), None


@dataclass
class Claim:
    """One checked sentence. ``holds`` is computed from the numbers, never set by hand."""

    key: str
    sentence: str
    measured: float | SeedStats
    op: str
    reference: float | SeedStats
    tolerance: float = 0.0
    reference_label: str = ""
    sigmas: float = 2.0
    meaningful: bool = True
    holds: bool = field(init=False)

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"claim {self.key!r}: op must be one of {OPS}, got {self.op!r}")
        self.holds = self._verdict()

    def _verdict(self) -> bool:
        m, m_se = _split(self.measured)
        r, r_se = _split(self.reference)
        if not (math.isfinite(m) and math.isfinite(r)):
            return False
        if self.op in ("<", ">"):
            gap = (r + self.tolerance - m) if self.op == "<" else (m - r - self.tolerance)
            # over seeds: the gap must exceed `sigmas` standard errors of the difference of the two means
            se = math.sqrt((m_se or 0.0) ** 2 + (r_se or 0.0) ** 2)
            return gap > self.sigmas * se if se > 0 and math.isfinite(se) else gap > 0
        if self.op == "within":
            return abs(m - r) <= self.tolerance
        if self.op == "within_rel":
            return abs(m - r) <= self.tolerance * abs(r)
        return m < self.tolerance * r  # ratio<

    def condition(self) -> str:
        ref = f"{self.reference}" if isinstance(self.reference, SeedStats) else _fmt(float(self.reference))
        label = f" {self.reference_label}" if self.reference_label else ""
        if self.op in ("<", ">"):
            tol = f" {'+' if self.tolerance > 0 else '-'} {_fmt(abs(self.tolerance))}" if self.tolerance else ""
            seeds = (f", by > {self.sigmas:g} SE" if isinstance(self.measured, SeedStats)
                     or isinstance(self.reference, SeedStats) else "")
            return f"{self.op} {ref}{label}{tol}{seeds}"
        if self.op == "within":
            return f"vs {ref}{label} (within {_fmt(self.tolerance)})"
        if self.op == "within_rel":
            return f"vs {ref}{label} (within {100 * self.tolerance:g} %)"
        return f"< {self.tolerance:g} x {ref}{label}"

    def verdict_word(self) -> str:
        if not self.meaningful:
            return ("holds" if self.holds else "fails") + " (quick run: not meaningful)"
        return "HOLDS" if self.holds else "FAILS"

    def line(self) -> str:
        measured = f"{self.measured}" if isinstance(self.measured, SeedStats) else _fmt(float(self.measured))
        n = self.measured.n if isinstance(self.measured, SeedStats) else None
        seeds = f" (n = {n})" if n else ""
        return f"claim  {self.sentence}: {measured}{seeds} {self.condition()}   {self.verdict_word()}"

    def to_json(self) -> dict[str, Any]:
        def enc(v):
            return v.to_json() if isinstance(v, SeedStats) else float(v)

        return {"sentence": self.sentence, "measured": enc(self.measured), "op": self.op,
                "reference": enc(self.reference), "reference_label": self.reference_label,
                "tolerance": self.tolerance, "holds": self.holds, "meaningful": self.meaningful,
                "text": self.line()}


def summary_lines(claims: Iterable[Claim]) -> list[str]:
    """The end-of-lesson list: one line per claim and a count of how many hold."""
    claims = list(claims)
    if not claims:
        return []
    held = sum(c.holds for c in claims)
    quick = "" if all(c.meaningful for c in claims) else "  (quick run: verdicts not meaningful)"
    lines = [f"Claims: {held} of {len(claims)} hold{quick}"]
    lines += [f"  {'✓' if c.holds else '✗'} {c.line()}" for c in claims]
    return lines
