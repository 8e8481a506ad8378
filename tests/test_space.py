import numpy as np
import pytest
from ConfigSpace import (
    AndConjunction,
    Categorical,
    ConfigurationSpace,
    Constant,
    EqualsCondition,
    Float,
    GreaterThanCondition,
    InCondition,
    Integer,
    OrConjunction,
    OrdinalHyperparameter,
)

from adbo.space import INACTIVE, SearchSpace, SpaceError


def mixed_space() -> ConfigurationSpace:
    cs = ConfigurationSpace()
    opt = Categorical("optimizer", ["sgd", "adam", "rmsprop"])
    lr = Float("lr", (1e-5, 1e-1), log=True)
    mom = Float("momentum", (0.0, 0.99))
    units = Integer("units", (10, 1024), log=True)
    layers = Integer("layers", (1, 5))
    size = OrdinalHyperparameter("size", ["small", "medium", "large"])
    wide = Integer("width_bonus", (0, 8))
    beta = Float("beta", (0.5, 0.999))
    const = Constant("loss", "mse")
    cs.add([opt, lr, mom, units, layers, size, wide, beta, const])
    cs.add(EqualsCondition(mom, opt, "sgd"))
    cs.add(AndConjunction(InCondition(wide, opt, ["adam", "rmsprop"]), GreaterThanCondition(wide, size, "small")))
    cs.add(OrConjunction(EqualsCondition(beta, opt, "adam"), GreaterThanCondition(beta, layers, 3)))
    return cs


def test_round_trip_every_kind_including_conditions():
    space = SearchSpace(mixed_space())
    X = space.sample(2000, np.random.default_rng(1))
    configs = space.decode(X)
    np.testing.assert_allclose(space.encode(configs), X, rtol=0, atol=1e-12)
    for c in configs:
        assert ("momentum" in c) == (c["optimizer"] == "sgd")
        assert ("width_bonus" in c) == (c["optimizer"] in ("adam", "rmsprop") and c["size"] != "small")
        assert ("beta" in c) == (c["optimizer"] == "adam" or c["layers"] > 3)
        assert 1e-5 <= c["lr"] <= 1e-1 and isinstance(c["lr"], float)
        assert 10 <= c["units"] <= 1024 and isinstance(c["units"], int)
        assert c["loss"] == "mse"
    # Every configuration ConfigSpace itself accepts is reproduced exactly.
    for cfg in mixed_space().sample_configuration(200):
        values = {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(cfg).items()}
        assert space.decode(space.encode([values]))[0] == pytest.approx(values)


def test_inactive_parameters_are_encoded_consistently():
    space = SearchSpace(mixed_space())
    X = space.sample(500, np.random.default_rng(2))
    mom = space.names.index("momentum")
    inactive = np.array(["momentum" not in c for c in space.decode(X)])
    assert inactive.any() and (~inactive).any()
    assert np.all(X[inactive, mom] == INACTIVE)
    assert np.all((X[~inactive, mom] >= 0) & (X[~inactive, mom] <= 1))
    # canonicalize is a projection: applying it twice changes nothing.
    np.testing.assert_array_equal(space.canonicalize(X), X)


def test_integer_and_categorical_buckets_are_uniform():
    space = SearchSpace({"k": (1, 4), "c": ["a", "b", "c"]})
    values = space.decode(space.sample(12000, np.random.default_rng(3)))
    ks = np.bincount([v["k"] for v in values])[1:]
    cs = {ch: sum(v["c"] == ch for v in values) for ch in "abc"}
    assert ks.min() > 2700 and ks.max() < 3300
    assert min(cs.values()) > 3700


def test_dict_shorthand_and_json_round_trip():
    space = SearchSpace({"lr": (1e-4, 1e-1, "log"), "n": (2, 64, "log"), "act": ["relu", "tanh"], "x": (0.0, 1.0), "c": 3})
    kinds = {c.name: (c.kind, c.log) for c in space.codecs}
    assert kinds["lr"] == ("float", True) and kinds["n"] == ("int", True) and kinds["act"][0] == "choice"
    again = SearchSpace.from_json(space.to_json())
    assert again == space
    X = space.sample(50, np.random.default_rng(0))
    assert again.decode(X) == space.decode(X)


def test_bad_spaces_are_refused_with_the_fix():
    with pytest.raises(SpaceError, match="tuple must be"):
        SearchSpace({"a": (1, 2, 3, 4)})
    with pytest.raises(SpaceError, match="empty"):
        SearchSpace({})
    space = SearchSpace({"a": ["x", "y"]})
    with pytest.raises(SpaceError, match="not a choice"):
        space.encode([{"a": "z"}])
    with pytest.raises(SpaceError, match="unknown parameter"):
        space.encode([{"a": "x", "b": 1}])


def test_initial_designs_differ_between_workers_and_fill_the_space():
    space = SearchSpace({f"x{i}": (0.0, 1.0) for i in range(4)})
    a, b = space.initial_design(16, seed=1), space.initial_design(16, seed=2)
    assert a.shape == (16, 4)
    assert not set(space.keys(a)) & set(space.keys(b))
    # Space-filling: every coordinate's 16 points fall in distinct sixteenths (Sobol balance).
    for j in range(4):
        assert len(set(np.floor(a[:, j] * 16).astype(int))) == 16


def test_keys_identify_equal_configurations():
    space = SearchSpace({"k": (1, 3), "c": ["a", "b"]})
    X = space.sample(200, np.random.default_rng(0))
    assert len(set(space.keys(X))) == 6


def test_unordered_categoricals_get_one_hot_features_and_ordinals_keep_their_column():
    cs = ConfigurationSpace()
    kind = Categorical("kind", ["a", "b", "c", "d"])
    flag = Categorical("flag", [False, True])
    size = OrdinalHyperparameter("size", ["s", "m", "l"])
    act = Categorical("act", ["relu", "tanh", "elu"])
    cs.add([kind, flag, size, act, Float("x", (0.0, 1.0))])
    cs.add(EqualsCondition(act, flag, True))
    space = SearchSpace(cs)
    cols = {space.names[j] for j in space.categorical_columns}
    assert cols == {"kind", "flag", "act"}  # the ordinal is not among the columns moved as categories
    assert space.feature_dim == space.dim - 2 + 4 + 3  # kind and act become 4 + 3 columns; flag stays one

    X = space.sample(400, np.random.default_rng(0))
    F = space.features(X)
    assert F.shape == (400, space.feature_dim)
    kept = [j for j in range(space.dim) if space.names[j] not in ("kind", "act")]
    np.testing.assert_array_equal(F[:, : len(kept)], X[:, kept])  # other columns as stored
    kind_block, act_block = F[:, len(kept): len(kept) + 4], F[:, len(kept) + 4:]
    kinds = [c["kind"] for c in space.decode(X)]
    np.testing.assert_array_equal(kind_block.argmax(axis=1), ["abcd".index(k) for k in kinds])
    assert np.all(kind_block.sum(axis=1) == 1.0)
    inactive = X[:, space.names.index("act")] == INACTIVE
    assert inactive.any() and (~inactive).any()
    assert np.all(act_block[inactive] == INACTIVE) and np.all(act_block[~inactive].sum(axis=1) == 1.0)
    # A space without wide unordered categoricals passes its rows through untouched.
    plain = SearchSpace({"x": (0.0, 1.0), "b": ["yes", "no"]})
    Y = plain.sample(5, np.random.default_rng(1))
    assert plain.features(Y) is Y or np.array_equal(plain.features(Y), Y)
