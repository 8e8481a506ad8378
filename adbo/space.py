"""Search spaces: ConfigSpace definitions encoded to the unit cube with vectorized numpy.

ConfigSpace is the user-facing language (it already knows log scales, ordinals and conditions),
but sampling and converting one ``Configuration`` at a time costs tens of microseconds each: a
worker scoring 10,000 candidates per step cannot afford that. So ``SearchSpace`` compiles the
ConfigSpace once into per-dimension numpy codecs and works on whole candidate matrices.

Encoding (one column per hyperparameter, in ConfigSpace's topological order):

* float: affine (or log-affine) map of ``[lower, upper]`` onto ``[0, 1]``;
* integer: each integer owns an equal-width (or equal log-width) bucket of ``[0, 1]`` and is
  encoded at its bucket's centre, so decode -> encode is a projection;
* categorical / ordinal with ``k`` choices: choice ``i`` is encoded at ``(i + 0.5) / k``;
* constant: ``0.5``;
* an inactive conditional parameter: ``INACTIVE`` (-1.0), a value no active parameter can take,
  so tree surrogates separate "not used" from every real setting with one split.

That single code column is what the run directory stores (its width, ``dim``, is part of the
shards' format), but for an *unordered* categorical the order of its codes means nothing. So the
stored encoding is not what the search reasons with: ``features`` gives the surrogate one 0/1
column per choice of each unordered categorical with three or more choices (a tree then splits
one category from the rest instead of "codes below a threshold", which would group categories by
the accident of their listing order), and ``categorical_columns`` tells candidate generation
which columns to move by redrawing a category rather than by a step along the code. Ordinals
(``OrdinalHyperparameter``) keep their one ordered column in both.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from ConfigSpace import (
    AndConjunction,
    CategoricalHyperparameter,
    ConfigurationSpace,
    Constant,
    EqualsCondition,
    Float,
    GreaterThanCondition,
    InCondition,
    Integer,
    LessThanCondition,
    NotEqualsCondition,
    OrConjunction,
    OrdinalHyperparameter,
)
from ConfigSpace.hyperparameters import FloatHyperparameter, IntegerHyperparameter
from scipy.stats import qmc

INACTIVE = -1.0

_KIND_FLOAT, _KIND_INT, _KIND_CHOICE, _KIND_CONST = "float", "int", "choice", "const"


class SpaceError(ValueError):
    """A search space that adbo cannot use, with the reason and the fix in the message."""


@dataclass(frozen=True)
class _Codec:
    """How one hyperparameter maps to one column of the unit cube."""

    name: str
    kind: str
    lower: float = 0.0
    upper: float = 1.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    ordered: bool = False

    def decode_numeric(self, u: np.ndarray) -> np.ndarray:
        """Unit-cube column -> values (floats/ints) or choice indices (choices)."""
        u = np.clip(u, 0.0, 1.0)
        if self.kind == _KIND_FLOAT:
            if self.log:
                lo, hi = math.log(self.lower), math.log(self.upper)
                return np.exp(lo + u * (hi - lo)).clip(self.lower, self.upper)
            return self.lower + u * (self.upper - self.lower)
        if self.kind == _KIND_INT:
            if self.log:
                lo, hi = math.log(self.lower), math.log(self.upper + 1.0)
                v = np.floor(np.exp(lo + u * (hi - lo)))
            else:
                v = np.floor(self.lower + u * (self.upper - self.lower + 1.0))
            return v.clip(self.lower, self.upper)
        if self.kind == _KIND_CHOICE:
            k = len(self.choices)
            return np.minimum(np.floor(u * k), k - 1)
        return np.zeros_like(u)

    def encode_numeric(self, v: np.ndarray) -> np.ndarray:
        """Values or choice indices -> canonical unit-cube column (inverse of decode_numeric)."""
        v = np.asarray(v, dtype=float)
        if self.kind == _KIND_FLOAT:
            if self.log:
                lo, hi = math.log(self.lower), math.log(self.upper)
                return ((np.log(v) - lo) / (hi - lo)).clip(0.0, 1.0)
            span = self.upper - self.lower
            return ((v - self.lower) / span).clip(0.0, 1.0) if span > 0 else np.full_like(v, 0.5)
        if self.kind == _KIND_INT:
            if self.log:
                lo, hi = math.log(self.lower), math.log(self.upper + 1.0)
                return ((np.log(v + 0.5) - lo) / (hi - lo)).clip(0.0, 1.0)
            return (v - self.lower + 0.5) / (self.upper - self.lower + 1.0)
        if self.kind == _KIND_CHOICE:
            return (v + 0.5) / len(self.choices)
        return np.full_like(v, 0.5)

    def to_user(self, numeric: float) -> Any:
        """One decoded number -> the plain Python value the objective receives."""
        if self.kind == _KIND_FLOAT:
            return float(numeric)
        if self.kind == _KIND_INT:
            return int(numeric)
        if self.kind == _KIND_CHOICE:
            return _plain(self.choices[int(numeric)])
        return _plain(self.choices[0])

    def from_user(self, value: Any) -> float:
        """A user value -> decoded number (choice index for choices)."""
        if self.kind in (_KIND_FLOAT, _KIND_INT):
            return float(value)
        if self.kind == _KIND_CHOICE:
            for i, c in enumerate(self.choices):
                if _plain(c) == _plain(value):
                    return float(i)
            raise SpaceError(
                f"value {value!r} is not a choice of {self.name!r}; choices are {list(self.choices)}"
            )
        return 0.0


def _plain(value: Any) -> Any:
    """numpy scalars (ConfigSpace hands out np.str_) -> builtins, so rows serialize as JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class _Clause:
    """One leaf condition evaluated on decoded numbers: child active iff op(parent, operand)."""

    parent: int
    op: str
    operand: tuple[float, ...]


def _codec_for(hp: Any) -> _Codec:
    if isinstance(hp, Constant):
        return _Codec(hp.name, _KIND_CONST, choices=(hp.value,))
    if isinstance(hp, CategoricalHyperparameter):
        return _Codec(hp.name, _KIND_CHOICE, choices=tuple(hp.choices))
    if isinstance(hp, OrdinalHyperparameter):
        return _Codec(hp.name, _KIND_CHOICE, choices=tuple(hp.sequence), ordered=True)
    if isinstance(hp, IntegerHyperparameter):
        return _Codec(hp.name, _KIND_INT, float(hp.lower), float(hp.upper), bool(hp.log))
    if isinstance(hp, FloatHyperparameter):
        return _Codec(hp.name, _KIND_FLOAT, float(hp.lower), float(hp.upper), bool(hp.log))
    raise SpaceError(
        f"hyperparameter {hp.name!r} has type {type(hp).__name__}, which adbo cannot encode; "
        "use Float, Integer, Categorical, OrdinalHyperparameter or Constant"
    )


def _space_from_dict(spec: Mapping[str, Any]) -> ConfigurationSpace:
    """The plain-dict shorthand: ``(lo, hi)``, ``(lo, hi, "log")``, ``[choices]``, constant."""
    cs = ConfigurationSpace()
    for name, value in spec.items():
        if isinstance(value, tuple):
            if len(value) == 3 and value[2] == "log":
                lo, hi = value[0], value[1]
                log = True
            elif len(value) == 2:
                lo, hi = value
                log = False
            else:
                raise SpaceError(
                    f"parameter {name!r}: a tuple must be (low, high) or (low, high, 'log'), got {value!r}"
                )
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
                raise SpaceError(f"parameter {name!r}: bounds must be numbers, got {value!r}")
            if not lo < hi:
                raise SpaceError(f"parameter {name!r}: the low bound {lo!r} must be below the high bound {hi!r}; "
                                 f"swap them, or use a plain value {lo!r} for a constant")
            if log and lo <= 0:
                raise SpaceError(f"parameter {name!r}: a log scale needs a positive low bound, got {lo!r}; "
                                 "raise it (for example 1e-6) or drop 'log'")
            if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
                cs.add(Integer(name, (lo, hi), log=log))
            else:
                cs.add(Float(name, (float(lo), float(hi)), log=log))
        elif isinstance(value, list):
            if not value:
                raise SpaceError(f"parameter {name!r}: a categorical needs at least one choice")
            cs.add(CategoricalHyperparameter(name, value))
        elif isinstance(value, (str, int, float, bool)):
            cs.add(Constant(name, value))
        else:
            raise SpaceError(
                f"parameter {name!r}: cannot read {value!r}; use (low, high), (low, high, 'log'), "
                "a list of choices, or a constant"
            )
    return cs


class SearchSpace:
    """A ConfigSpace compiled for fast batched encoding, sampling and decoding.

    Accepts a ``ConfigurationSpace`` or the dict shorthand (see ``_space_from_dict``).
    """

    def __init__(self, space: ConfigurationSpace | Mapping[str, Any]):
        if isinstance(space, SearchSpace):
            space = space.configspace
        if isinstance(space, Mapping) and not isinstance(space, ConfigurationSpace):
            space = _space_from_dict(space)
        if not isinstance(space, ConfigurationSpace):
            raise SpaceError(
                f"expected a ConfigSpace ConfigurationSpace or a dict, got {type(space).__name__}"
            )
        if space.forbidden_clauses:
            raise SpaceError(
                "forbidden clauses are not supported yet; express the restriction with conditions "
                "or have the objective return float('nan') for invalid combinations"
            )
        if len(space) == 0:
            raise SpaceError("the search space is empty; add at least one hyperparameter")
        self.configspace = space
        hps = list(space.values())
        self.names: list[str] = [hp.name for hp in hps]
        self._index = {n: i for i, n in enumerate(self.names)}
        self.codecs: list[_Codec] = [_codec_for(hp) for hp in hps]
        # Conditions in disjunctive normal form per child: active iff any AND-group holds
        # (and the parent is itself active, enforced by topological evaluation).
        self._conditions: dict[int, list[list[_Clause]]] = {}
        for cond in space.conditions:
            child = self._index[cond.child.name]
            self._conditions[child] = self._to_dnf(cond)
        self._cond_children = sorted(self._conditions)
        self._parents_of = {
            c: sorted({cl.parent for group in groups for cl in group})
            for c, groups in self._conditions.items()
        }
        self._snap_cols = np.array(
            [i for i, c in enumerate(self.codecs) if c.kind != _KIND_FLOAT], dtype=int
        )
        unordered = [j for j, c in enumerate(self.codecs) if c.kind == _KIND_CHOICE and not c.ordered
                     and len(c.choices) >= 2]
        self.categorical_columns: np.ndarray = np.array(unordered, dtype=int)
        """Columns of unordered categoricals (two or more choices): moved by redrawing a category."""
        self.categorical_sizes: np.ndarray = np.array([len(self.codecs[j].choices) for j in unordered], dtype=int)
        wide = [j for j in unordered if len(self.codecs[j].choices) >= 3]
        self._onehot_cols = np.array(wide, dtype=int)
        self._onehot_sizes = np.array([len(self.codecs[j].choices) for j in wide], dtype=int)
        self._kept_cols = np.array([j for j in range(len(self.codecs)) if j not in set(wide)], dtype=int)

    # -- conditions --------------------------------------------------------------------
    def _to_dnf(self, cond: Any) -> list[list[_Clause]]:
        if isinstance(cond, AndConjunction):
            groups: list[list[_Clause]] = [[]]
            for comp in cond.components:
                sub = self._to_dnf(comp)
                groups = [g + s for g in groups for s in sub]
            return groups
        if isinstance(cond, OrConjunction):
            return [g for comp in cond.components for g in self._to_dnf(comp)]
        parent = self._index[cond.parent.name]
        codec = self.codecs[parent]
        if isinstance(cond, InCondition):
            return [[_Clause(parent, "in", tuple(codec.from_user(v) for v in cond.values))]]
        ops = {
            EqualsCondition: "eq",
            NotEqualsCondition: "ne",
            LessThanCondition: "lt",
            GreaterThanCondition: "gt",
        }
        for cls, op in ops.items():
            if type(cond) is cls:
                if op in ("lt", "gt") and codec.kind == _KIND_CHOICE and not codec.ordered:
                    raise SpaceError(f"condition {cond}: order comparisons need an ordinal parent")
                return [[_Clause(parent, op, (codec.from_user(cond.value),))]]
        raise SpaceError(f"condition type {type(cond).__name__} is not supported: {cond}")

    def _active_mask(self, numeric: np.ndarray, active: np.ndarray, child: int) -> np.ndarray:
        result = np.zeros(numeric.shape[0], dtype=bool)
        for group in self._conditions[child]:
            ok = np.ones(numeric.shape[0], dtype=bool)
            for cl in group:
                col = numeric[:, cl.parent]
                if cl.op == "eq":
                    hit = np.isclose(col, cl.operand[0])
                elif cl.op == "ne":
                    hit = ~np.isclose(col, cl.operand[0])
                elif cl.op == "lt":
                    hit = col < cl.operand[0]
                elif cl.op == "gt":
                    hit = col > cl.operand[0]
                else:
                    hit = np.isin(col, cl.operand)
                ok &= hit & active[:, cl.parent]
            result |= ok
        return result

    # -- batched transforms ------------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.names)

    @property
    def feature_dim(self) -> int:
        """Width of ``features``: ``dim`` plus k - 1 per unordered categorical of k >= 3 choices."""
        return len(self._kept_cols) + int(self._onehot_sizes.sum())

    def features(self, X: np.ndarray) -> np.ndarray:
        """Encoded rows -> the surrogate's inputs, with unordered categoricals one-hot.

        Columns: every column other than a wide (k >= 3) unordered categorical, unchanged and in
        order, then one block of k 0/1 columns per such categorical. A block of an inactive
        categorical is all ``INACTIVE``, so "not used" still parts from every choice in one split.
        Without such categoricals the input is returned as is (no copy), so purely numeric
        spaces pay nothing.
        """
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if len(self._onehot_cols) == 0:
            return X
        n = X.shape[0]
        out = np.zeros((n, self.feature_dim))
        out[:, : len(self._kept_cols)] = X[:, self._kept_cols]
        rows = np.arange(n)
        start = len(self._kept_cols)
        for j, k in zip(self._onehot_cols, self._onehot_sizes):
            col = X[:, j]
            index = np.minimum(np.floor(np.clip(col, 0.0, 1.0) * k), k - 1).astype(np.intp)
            block = out[:, start : start + k]
            block[rows, index] = 1.0
            block[col == INACTIVE] = INACTIVE
            start += k
        return out

    def _decode_numeric(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit-cube rows -> (decoded numbers, active mask); inactive entries are ignored."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        numeric = np.empty_like(X)
        for j, codec in enumerate(self.codecs):
            numeric[:, j] = codec.decode_numeric(X[:, j])
        active = np.ones(X.shape, dtype=bool)
        for child in self._cond_children:
            active[:, child] = self._active_mask(numeric, active, child)
        return numeric, active

    def canonicalize(self, X: np.ndarray) -> np.ndarray:
        """Project arbitrary points of the cube to the encodings of real configurations.

        Integers and choices snap to their bucket centres and inactive parameters become
        ``INACTIVE``, so two points are the same configuration iff their rows are equal.
        """
        X = np.atleast_2d(np.asarray(X, dtype=float))
        numeric, active = self._decode_numeric(X)
        out = np.clip(X, 0.0, 1.0)
        for j in self._snap_cols:
            out[:, j] = self.codecs[j].encode_numeric(numeric[:, j])
        out[~active] = INACTIVE
        return out

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform random configurations, encoded (rows are canonical)."""
        return self.canonicalize(rng.random((n, self.dim)))

    def initial_design(self, n: int, seed: int) -> np.ndarray:
        """A scrambled Sobol design of ``n`` points; the seed makes each worker's design its own.

        Sobol points are balanced only in powers of two, so we draw the next power of two and
        keep the first ``n`` (they are still well spread, and better than i.i.d. uniform).
        """
        if n <= 0:
            return np.empty((0, self.dim))
        sampler = qmc.Sobol(d=self.dim, scramble=True, seed=np.random.default_rng(seed))
        m = max(0, math.ceil(math.log2(n)))
        points = sampler.random_base2(m)[:n]
        return self.canonicalize(points)

    def decode(self, X: np.ndarray) -> list[dict[str, Any]]:
        """Encoded rows -> parameter dicts as the objective sees them (inactive ones omitted)."""
        numeric, active = self._decode_numeric(X)
        rows = []
        for i in range(numeric.shape[0]):
            rows.append(
                {
                    name: codec.to_user(numeric[i, j])
                    for j, (name, codec) in enumerate(zip(self.names, self.codecs))
                    if active[i, j]
                }
            )
        return rows

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Parameter dicts -> canonical encoded rows; missing conditional values become inactive."""
        X = np.full((len(configs), self.dim), 0.5)
        for i, config in enumerate(configs):
            unknown = set(config) - set(self.names)
            if unknown:
                raise SpaceError(
                    f"unknown parameter(s) {sorted(unknown)}; the space has {self.names}"
                )
            for j, (name, codec) in enumerate(zip(self.names, self.codecs)):
                if name in config:
                    X[i, j] = float(codec.encode_numeric(np.array([codec.from_user(config[name])]))[0])
                elif j not in self._conditions:
                    raise SpaceError(f"configuration {dict(config)} lacks parameter {name!r}")
        return self.canonicalize(X)

    def keys(self, X: np.ndarray) -> list[bytes]:
        """Hashable identities of canonical rows, for "already evaluated or in flight" checks."""
        rounded = np.round(np.atleast_2d(X), 9) + 0.0  # +0.0 folds -0.0 into 0.0
        return [row.tobytes() for row in rounded]

    # -- serialization -----------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.configspace.to_serialized_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        return cls(ConfigurationSpace.from_serialized_dict(json.loads(text)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"SearchSpace({self.dim} parameters: {', '.join(self.names)})"
