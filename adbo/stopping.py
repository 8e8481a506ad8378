"""Early stopping without a manager: each worker judges its own running evaluation against every
learning curve of the run (peers' finished, stopped and in-flight curves alike).

A curve is what an objective reports through its trial handle (``trial.report(value, step)``).
Workers keep every curve they have read in a ``CurveBook``; a ``Stopper`` looks at the book when
the running evaluation reports a step and says whether to stop it, and why. All comparisons are
made on the *best value so far* of each curve (running minimum of the loss, or maximum of a
score), so one noisy epoch neither stops a good configuration nor saves a bad one.

Three rules, chosen with ``make_stopper`` by name:

* ``asha`` (asynchronous successive halving, the default): rungs at ``min_step * reduction**k``;
  an evaluation that reaches a rung continues only if it is in the best ``1/reduction`` of every
  curve of the run that reached that rung.
* ``median``: at each step from ``min_step`` on, stop if worse than the median of the peers'
  curves at the same step (Google Vizier's median rule; Optuna's ``MedianPruner``).
* ``extrapolate``: at the rungs, fit a saturating power law to the curve so far and stop if its
  value at ``max_step`` would be worse than the median of the curves that got there.

Every rule takes ``protect_best``: the surrogate's own expectation can overrule the curves. An
evaluation whose proposal the surrogate predicted to beat all but fewer than ``protect_best`` of
the results it was fitted on runs to its end whatever its first epochs look like, so that a slow
starter in the region the search is converging on is measured rather than guessed at.

The benchmark behind the defaults is ``benchmarks/early_stopping.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Key = tuple[int, int]
"""(worker, seq): one evaluation."""

STOPPERS = ("none", "asha", "median", "extrapolate")


class CurveBook:
    """Every learning curve a worker knows, keyed by (worker, seq).

    Values are kept as *losses* (the user's value, negated when maximizing) so the rules compare
    one way. Curves only grow: a longer copy of a curve (a peer republishing its in-flight curve,
    or its final row) replaces the shorter one, a shorter or equal copy is ignored.
    ``at(step)`` is the index the rules read: the best loss of every curve at its first report at
    or after ``step``; it is built once per step asked for and kept up to date on every update.
    """

    def __init__(self, maximize: bool = False) -> None:
        self.maximize = maximize
        self.steps: dict[Key, np.ndarray] = {}
        self.losses: dict[Key, np.ndarray] = {}
        self._at: dict[float, dict[Key, float]] = {}

    def __len__(self) -> int:
        return len(self.steps)

    def __contains__(self, key: Key) -> bool:
        return key in self.steps

    def update(self, key: Key, steps: np.ndarray, values: np.ndarray) -> bool:
        """Store a curve (in the user's direction) if it is longer than the one known; True if so."""
        steps = np.asarray(steps, dtype=float)
        if not len(steps) or (key in self.steps and len(self.steps[key]) >= len(steps)):
            return False
        losses = -np.asarray(values, dtype=float) if self.maximize else np.asarray(values, dtype=float)
        self.steps[key] = steps
        self.losses[key] = losses
        for step, index in self._at.items():
            if key not in index and steps[-1] >= step:
                index[key] = _best_at(steps, losses, step)
        return True

    def curve(self, key: Key) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) in the user's direction."""
        losses = self.losses[key]
        return self.steps[key], (-losses if self.maximize else losses)

    def at(self, step: float) -> dict[Key, float]:
        """Best loss of every curve that reached ``step``, at the report where it got there."""
        index = self._at.get(step)
        if index is None:
            index = {key: _best_at(s, self.losses[key], step) for key, s in self.steps.items() if s[-1] >= step}
            self._at[step] = index
        return index

    def max_step(self) -> float:
        """The furthest step any known curve reached (0 when none)."""
        return max((float(s[-1]) for s in self.steps.values()), default=0.0)

    def to_loss(self, value: float) -> float:
        return -value if self.maximize else value


def _best_at(steps: np.ndarray, losses: np.ndarray, step: float) -> float:
    upto = int(np.searchsorted(steps, step, side="left")) + 1  # through the first report at or after step
    window = losses[:upto]
    finite = window[np.isfinite(window)]
    return float(finite.min()) if len(finite) else math.inf


class Stopper(Protocol):
    """A rule that decides, at each report, whether the running evaluation stops."""

    name: str

    def should_stop(self, book: CurveBook, key: Key) -> str | None:
        """Why ``key``'s evaluation should stop after its latest report, or None to continue."""

    def publish_step(self, previous: float, step: float) -> bool:
        """Whether peers need this report now (a decision point): the worker then republishes the
        running curve, so evaluations that reach this point later compare with it."""

    def protects(self, predicted_rank: int | None) -> bool:
        """Whether an evaluation proposed with this ``Proposal.predicted_rank`` is never stopped."""


@dataclass
class Protecting:
    """What every rule shares: the surrogate's veto on stopping its own most promising proposals."""

    protect_best: int = field(default=0, kw_only=True)
    """Never stop an evaluation whose proposal the surrogate predicted to beat all but fewer than
    this many of the results it was fitted on (0: off). A count, not a share, so the veto narrows
    as results accumulate: early on it keeps the proposals that aim at the best few results, late
    in a run only those predicted to be new bests. Why: stopped evaluations enter the surrogate
    with values imputed from their rungs, and slow starters stopped near the optimum then steer
    the search away from it (docs/early_stopping.md, "The surrogate's veto")."""

    def __post_init__(self) -> None:
        _check(self.protect_best >= 0, f"protect_best must be 0 (off) or a count, not {self.protect_best}")

    def protects(self, predicted_rank: int | None) -> bool:
        return predicted_rank is not None and predicted_rank < self.protect_best


def _crossed(previous: float, step: float, min_step: float, reduction: float) -> float | None:
    """The highest rung ``min_step * reduction**k`` in (previous, step], or None."""
    if step < min_step:
        return None
    k = math.floor(math.log(step / min_step) / math.log(reduction) + 1e-9)
    rung = min_step * reduction ** k
    return rung if rung > previous else None


def _last_two(book: CurveBook, key: Key) -> tuple[float, float]:
    steps = book.steps[key]
    return (float(steps[-2]) if len(steps) > 1 else -math.inf), float(steps[-1])


@dataclass
class NoStopper:
    """Every evaluation runs to its end (reports are still stored)."""

    name: str = "none"

    def should_stop(self, book: CurveBook, key: Key) -> str | None:
        return None

    def publish_step(self, previous: float, step: float) -> bool:
        return False

    def protects(self, predicted_rank: int | None) -> bool:
        return False


@dataclass
class SuccessiveHalving(Protecting):
    """Asynchronous successive halving (ASHA, Li et al. 2020) judged against the whole run."""

    min_step: float = 1.0
    """The first rung: no evaluation is stopped before it reports this step."""
    reduction: float = 3.0
    """Only the best 1/reduction of the curves at a rung continue past it."""
    min_peers: int = 3
    """Curves (this one included) that must have reached a rung before it stops anything there:
    the first evaluations of a run are not judged against one or two peers."""
    max_step: float | None = None
    """The step a full evaluation reaches (its last epoch), if known: no rung there or beyond,
    since stopping a training at its end saves nothing."""
    window: int = 0
    """Judge against only the ``window`` curves that reached the rung most recently (as this worker
    learned of them), 0: all. Behind BO the proposals improve as the run goes on, so the early
    space-filling curves that fill every rung make the rule lax; a window keeps it as strict as
    it is for random proposals."""
    finishers: int = 0
    """Also judge against the run's best finished evaluations: once this many curves have reached
    the last step, an evaluation continues past a rung only if it is no worse there than the worst
    of the best ``finishers`` finished curves was at that rung. Behind BO most proposals beat the
    early space-filling curves that fill every rung, so the rank test alone lets most of them run
    to the end; the rung values of the curves that ended best say how good a curve must be at this
    rung to end among them, and they follow crossing curves (when slow starters ended best, their
    poor early values make the bar lenient). 0: off."""
    ranks: int = 1
    """1: the rank test applies as well (stop if either says so); 0: once ``finishers`` curves
    have finished, only their bar applies."""
    protect_best: int = field(default=3, kw_only=True)
    """``Protecting.protect_best``, on by default here. Measured with benchmarks/early_stopping.py
    (50 trainings with 1 and 8 workers, 10 seeds; 150 with 8, 5 seeds): against the rule alone,
    better in 8 of 12 cells, mostly on the curves whose first epochs mislead (crossing Levy 6.99
    against 12.3 with 1 worker; 1.69 against 13.2 at 150 trainings), level in 2, worse in 2,
    both on the Combo pool (0.274 against 0.341 validation R2 with 1 worker). See
    docs/early_stopping.md, "The surrogate's veto"."""
    name: str = "asha"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.min_step > 0, f"min_step must be positive, not {self.min_step}")
        _check(self.reduction > 1, f"reduction must be above 1, not {self.reduction}")
        _check(self.finishers >= 0, f"finishers must be 0 (off) or a count, not {self.finishers}")

    def _bar(self, book: CurveBook, rung: float) -> float | None:
        """The worst value at ``rung`` among the best ``finishers`` finished curves (None: too few)."""
        if not self.finishers:
            return None
        last = self.max_step if self.max_step is not None else book.max_step()
        if last <= rung:
            return None
        finals = book.at(last)  # the book's own index: every finished curve's best, kept up to date
        if len(finals) < self.finishers:
            return None
        best = sorted(finals, key=finals.__getitem__)[:int(self.finishers)]
        index = book.at(rung)
        values = [index[key] for key in best if key in index]
        return max(values) if values else None

    def _rung(self, previous: float, step: float) -> float | None:
        rung = _crossed(previous, step, self.min_step, self.reduction)
        return None if rung is None or (self.max_step is not None and rung >= self.max_step) else rung

    def publish_step(self, previous: float, step: float) -> bool:
        return self._rung(previous, step) is not None

    def should_stop(self, book: CurveBook, key: Key) -> str | None:
        previous, step = _last_two(book, key)
        rung = self._rung(previous, step)
        if rung is None:
            return None
        index = book.at(rung)
        own = index.get(key)
        if own is None or len(index) < max(1, self.min_peers):
            return None
        bar = self._bar(book, rung)
        if bar is not None and own > bar:
            return (f"successive halving at step {rung:g}: {book.to_loss(own):g} there, worse than the best "
                    f"{int(self.finishers)} finished evaluations all were ({book.to_loss(bar):g})")
        if bar is not None and not self.ranks:
            return None
        if self.window and len(index) > self.window + 1:
            # Dicts keep the order in which curves reached the rung here: the last ones are the newest.
            others = [v for k, v in index.items() if k != key][-self.window:]
            values = np.array(others + [own])
        else:
            values = np.fromiter(index.values(), dtype=float, count=len(index))
        keep = max(1, int(len(values) // self.reduction))
        rank = int((values < own).sum())
        if rank < keep:
            return None
        return (f"successive halving at step {rung:g}: ranked {rank + 1} of {len(values)} curves there, "
                f"only the best {keep} continue")


@dataclass
class MedianRule(Protecting):
    """Stop when worse than the median of the peers' curves at the same step."""

    min_step: float = 1.0
    min_peers: int = 5
    """Peers' curves needed at a step before the median there is trusted."""
    publish_every: float = 3.0
    """Running curves are republished at steps ``min_step * publish_every**k`` (not every step:
    that would be one segment per report)."""
    max_step: float | None = None
    """The step a full evaluation reaches, if known: nothing is stopped there or beyond."""
    name: str = "median"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.min_step > 0, f"min_step must be positive, not {self.min_step}")
        _check(self.publish_every > 1, f"publish_every must be above 1, not {self.publish_every}")

    def publish_step(self, previous: float, step: float) -> bool:
        if self.max_step is not None and step >= self.max_step:
            return False
        return _crossed(previous, step, self.min_step, self.publish_every) is not None

    def should_stop(self, book: CurveBook, key: Key) -> str | None:
        _, step = _last_two(book, key)
        if step < self.min_step or (self.max_step is not None and step >= self.max_step):
            return None
        index = book.at(step)
        own = index.get(key)
        others = [v for k, v in index.items() if k != key]
        if own is None or len(others) < self.min_peers:
            return None
        median = float(np.median(others))
        if own <= median:
            return None
        return f"median rule at step {step:g}: best so far is worse than the median of {len(others)} peers there"


@dataclass
class Extrapolation(Protecting):
    """Stop when a power-law fit of the curve says it would end worse than the median final value."""

    max_step: float | None = None
    """The step an evaluation that is never stopped reaches (epochs of a full training); None: the
    furthest step any curve of the run has reached."""
    min_step: float = 1.0
    reduction: float = 3.0
    """Decisions at ``min_step * reduction**k``, where the curve is also republished."""
    min_points: int = 3
    min_peers: int = 3
    """Curves that reached ``max_step`` before any extrapolation is trusted."""
    name: str = "extrapolate"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.min_step > 0, f"min_step must be positive, not {self.min_step}")
        _check(self.reduction > 1, f"reduction must be above 1, not {self.reduction}")

    def publish_step(self, previous: float, step: float) -> bool:
        return _crossed(previous, step, self.min_step, self.reduction) is not None

    def should_stop(self, book: CurveBook, key: Key) -> str | None:
        previous, step = _last_two(book, key)
        if _crossed(previous, step, self.min_step, self.reduction) is None:
            return None
        horizon = self.max_step or book.max_step()
        if step >= horizon:
            return None
        finals = [v for k, v in book.at(horizon).items() if k != key]
        steps = book.steps[key]
        if len(finals) < self.min_peers or len(steps) < self.min_points:
            return None
        predicted = extrapolate(steps, np.fmin.accumulate(book.losses[key]), horizon)  # a NaN report is skipped
        threshold = float(np.median(finals))
        if not math.isfinite(predicted) or predicted <= threshold:
            return None
        return (f"extrapolation at step {step:g}: a power-law fit reaches {book.to_loss(predicted):.4g} at step "
                f"{horizon:g}, worse than the median {book.to_loss(threshold):.4g} of {len(finals)} finished curves")


_EXPONENTS = np.geomspace(0.05, 3.0, 24)


def extrapolate(steps: np.ndarray, losses: np.ndarray, at: float) -> float:
    """Least-squares fit of ``loss = a + b * step**-c`` (c on a grid, a and b linear), evaluated at ``at``.

    Saturating power laws describe most training curves (Domhan et al. 2015 use them among their
    families); the grid keeps the fit to one small vectorized solve.
    """
    s = np.asarray(steps, dtype=float)
    y = np.asarray(losses, dtype=float)
    ok = np.isfinite(y) & (s > 0)
    s, y = s[ok], y[ok]
    if len(s) < 3:
        return float(y[-1]) if len(y) else math.nan
    basis = s[None, :] ** -_EXPONENTS[:, None]                      # (grid, n)
    b_mean = basis.mean(axis=1, keepdims=True)
    y_mean = y.mean()
    centered = basis - b_mean
    var = (centered ** 2).sum(axis=1)
    b = np.where(var > 0, (centered * (y - y_mean)).sum(axis=1) / np.where(var > 0, var, 1.0), 0.0)
    b = np.maximum(b, 0.0)  # losses fall with training: a rising fit means no trend to extrapolate
    a = y_mean - b * b_mean[:, 0]
    residual = ((a[:, None] + b[:, None] * basis - y) ** 2).sum(axis=1)
    best = int(np.argmin(residual))
    return float(a[best] + b[best] * at ** -_EXPONENTS[best])


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def make_stopper(stopper: "str | Stopper | None", **options: float) -> Stopper:
    """A stopper from its name (``none``, ``asha``, ``median``, ``extrapolate``) and options, or as given."""
    if stopper is None:
        return NoStopper()
    if not isinstance(stopper, str):
        return stopper
    kinds = {"none": NoStopper, "asha": SuccessiveHalving, "median": MedianRule, "extrapolate": Extrapolation}
    if stopper not in kinds:
        raise ValueError(f"unknown stopper {stopper!r}; choose one of {', '.join(STOPPERS)}")
    kind = kinds[stopper]
    known = {f for f in kind.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"stopper {stopper!r} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(known)) or 'none'}")
    return kind(**options)


PARTIAL_MODES = ("last", "rank", "worst")


def check_partial_mode(mode: str) -> None:
    """Refuse an unknown ``partial_results`` value with the list of known ones."""
    if mode not in PARTIAL_MODES:
        raise ValueError(f"unknown partial_results {mode!r}; choose one of {', '.join(PARTIAL_MODES)}")


def surrogate_targets(y: np.ndarray, stopped: np.ndarray, keys: list[Key], book: CurveBook,
                      complete: np.ndarray, mode: str = "rank") -> np.ndarray:
    """The values the surrogate fits for stopped evaluations (``y`` unchanged elsewhere).

    ``last``: the value at the step where it stopped. ``rank``: its rank among the curves at that
    step, mapped to the same quantile of the finished evaluations' values (a curve stopped in the
    worst third of its rung counts like a finished evaluation in the worst third). ``worst``: like
    a failure. ``complete`` marks the finished (ok) rows whose values the ranks map to.
    """
    check_partial_mode(mode)
    out = np.array(y, dtype=float, copy=True)
    idx = np.flatnonzero(stopped)
    if not len(idx) or mode == "last":
        return out
    finals = np.sort(np.array([book.to_loss(v) for v in y[complete] if math.isfinite(v)]))
    if mode == "worst":
        out[idx] = np.nan
        return out
    if len(finals) < 3:
        return out
    # Group by the step where each stopped (a few distinct rungs), then rank with one sort per step.
    by_step: dict[float, list[tuple[int, float]]] = {}
    for i in idx:
        key = keys[i]
        if key in book:
            by_step.setdefault(float(book.steps[key][-1]), []).append((int(i), key))
    for step, members in by_step.items():
        index = book.at(step)
        ranked = np.sort(np.fromiter(index.values(), dtype=float, count=len(index)))
        own = np.array([index.get(key, math.inf) for _, key in members])
        quantiles = np.searchsorted(ranked, own, side="left") / max(1, len(ranked) - 1)
        losses = np.quantile(finals, np.minimum(1.0, quantiles))
        for (i, _), loss in zip(members, losses):
            out[i] = book.to_loss(float(loss))  # to_loss is its own inverse
    return out
