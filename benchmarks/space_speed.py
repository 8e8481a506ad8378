#!/usr/bin/env python
"""Speed of candidate sampling and encoding on a 22-parameter mixed, conditional space.

Prints JSON. The anchor is ConfigSpace's own ``sample_configuration`` on the same space in the
same run, so the ratio is meaningful on any machine. Target (issue 2): 10,000 candidates well
under 0.1 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer

from adbo.space import SearchSpace


def combo_like_space() -> ConfigurationSpace:
    """22 parameters shaped like CANDLE Combo's search space (ints with log scales, categoricals, conditions)."""
    cs = ConfigurationSpace(seed=0)
    hps = [Integer(f"dense_{i}", (10, 1024), log=True) for i in range(3)]
    hps += [Integer(f"dense_feature_layers_{i}", (10, 1024), log=True) for i in range(3)]
    hps += [
        Categorical("activation", ["elu", "gelu", "hard_sigmoid", "linear", "relu", "selu", "sigmoid",
                                   "softplus", "softsign", "swish", "tanh"]),
        Categorical("optimizer", ["sgd", "rmsprop", "adagrad", "adadelta", "adam"]),
        Float("dropout", (0.0, 0.5)),
        Integer("batch_size", (8, 512), log=True),
        Float("learning_rate", (1e-5, 1e-2), log=True),
        Float("base_lr", (1e-5, 1e-2), log=True),
        Categorical("residual", [False, True]),
        Categorical("early_stopping", [False, True]),
        Integer("early_stopping_patience", (5, 20)),
        Categorical("reduce_lr", [False, True]),
        Float("reduce_lr_factor", (0.1, 1.0)),
        Integer("reduce_lr_patience", (5, 20)),
        Categorical("warmup_lr", [False, True]),
        Categorical("batch_normalization", [False, True]),
        Categorical("loss", ["mse", "mae", "logcosh", "mape", "msle", "huber"]),
        Categorical("scaling", ["std", "minmax", "maxabs"]),
    ]
    cs.add(hps)
    by_name = {h.name: h for h in hps}
    cs.add([
        EqualsCondition(by_name["early_stopping_patience"], by_name["early_stopping"], True),
        EqualsCondition(by_name["reduce_lr_factor"], by_name["reduce_lr"], True),
        EqualsCondition(by_name["reduce_lr_patience"], by_name["reduce_lr"], True),
        EqualsCondition(by_name["base_lr"], by_name["warmup_lr"], True),
    ])
    return cs


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="candidates per call (default 10,000)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", help="also write the JSON to this file")
    args = parser.parse_args()
    cs = combo_like_space()
    space = SearchSpace(cs)
    rng = np.random.default_rng(0)
    X = space.sample(args.n, rng)
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, python {platform.python_version()}",
        "parameters": space.dim,
        "n_candidates": args.n,
        "adbo_sample_s": timed(lambda: space.sample(args.n, rng), args.repeats),
        "adbo_canonicalize_s": timed(lambda: space.canonicalize(X), args.repeats),
        "adbo_keys_s": timed(lambda: space.keys(X), args.repeats),
        "adbo_decode_s": timed(lambda: space.decode(X), max(1, args.repeats // 3)),
        "configspace_sample_s": timed(lambda: cs.sample_configuration(args.n), 1),
    }
    result["speedup_vs_configspace"] = result["configspace_sample_s"] / result["adbo_sample_s"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
