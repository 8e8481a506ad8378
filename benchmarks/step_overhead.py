#!/usr/bin/env python
"""Per-step BO overhead after N results: adbo vs DeepHyper CBO (defaults) vs Optuna TPE (defaults).

One step = ingest the newest result, refit, propose one configuration; the objective's own
evaluation is not timed. For each problem, N and tool, a fresh child process is filled with N
random (configuration, objective) pairs (the same pairs for every tool), runs ``--warmup``
untimed steps, then ``--repeats`` timed steps; the median is reported. Children run one
thread each (OMP/OpenBLAS/MKL = 1) and one at a time, tools interleaved at each N so that a
change of machine load hits all three alike.

* adbo: exactly the worker's path: ``Proposer(...).propose(X, y, status, exclude)`` on numpy
  arrays that the step extends by one row (and the ``exclude`` set by one key).
* anchors: see ``benchmarks/_anchors.py`` (public ask/tell APIs, defaults).

Problems: ``ackley10`` (10 floats on [-32.768, 32.768]) and ``combo22`` (the 22-parameter mixed,
conditional space of ``benchmarks/space_speed.py``, with a smooth synthetic loss).

Budget: a measurement times at most ``--repeats`` steps, and stops early once its timed steps add
up to ``--budget-s`` (never before ``--min-repeats``), so that DeepHyper's 20 s steps on the mixed
space do not dominate the run. Cap: a measurement stops timing once one step exceeds ``--step-cap-s`` (default 30 s), and a
child that runs past ``--child-timeout-s`` is killed; either way that tool skips the larger N of
that problem, and the JSON says why. The anchors are optional: without them (``pip install
'adbo[bench]'``, or the ``.venv-bench`` virtualenv) their entries are marked skipped.

Usage: ``python benchmarks/step_overhead.py --json OUT.json [--sizes 100,1000] [--problems
ackley10] [--tools adbo,optuna_tpe] [--repeats 5]``. Prints JSON; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TOOLS = ("adbo", "deephyper_cbo", "optuna_tpe")
PROBLEMS = ("ackley10", "combo22")
SIZES = (100, 1000, 5000, 20000, 40000)
HEADLINE = "ackley10"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MEASURED_PACKAGES = ("adbo", "numpy", "scipy", "scikit-learn", "ConfigSpace", "deephyper", "pymoo",
                     "optuna", "pandas")


# -- problems: a ConfigSpace and an objective on user-level configurations ---------------
def make_problem(name: str) -> tuple[Any, Callable[[dict[str, Any]], float]]:
    import numpy as np

    from adbo.space import SearchSpace

    if name == "ackley10":
        from adbo.objectives.synthetic import ackley

        d = 10
        cs = SearchSpace({f"x{i}": (-32.768, 32.768) for i in range(d)}).configspace
        names = [f"x{i}" for i in range(d)]
        return cs, lambda c: ackley(np.array([c[k] for k in names], dtype=float))
    if name == "combo22":
        from space_speed import combo_like_space

        cs = combo_like_space()
        return cs, combo_loss(cs)
    raise SystemExit(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}")


def combo_loss(cs: Any) -> Callable[[dict[str, Any]], float]:
    """A smooth, mildly multimodal synthetic loss on the mixed space (its value is irrelevant to
    the overhead; it only has to vary with every parameter the way a real loss would)."""
    import numpy as np
    from ConfigSpace.hyperparameters import FloatHyperparameter, IntegerHyperparameter

    rng = np.random.default_rng(12345)
    terms: list[tuple[str, Callable[[Any], float]]] = []
    for hp in cs.values():
        if isinstance(hp, (IntegerHyperparameter, FloatHyperparameter)):
            lo, hi, log, t = float(hp.lower), float(hp.upper), bool(hp.log), float(rng.uniform(0.2, 0.8))

            def f(v, lo=lo, hi=hi, log=log, t=t):
                p = (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo)) if log else (v - lo) / (hi - lo)
                return (p - t) ** 2 + 0.05 * (1 - math.cos(6 * math.pi * (p - t)))
        else:
            table = {c.item() if hasattr(c, "item") else c: float(x)
                     for c, x in zip(hp.choices, rng.uniform(0, 0.3, len(hp.choices)))}

            def f(v, table=table):
                return table[v]
        terms.append((hp.name, f))

    def loss(c: dict[str, Any]) -> float:
        return float(sum(f(c[k]) if k in c else 0.05 for k, f in terms))

    return loss


# -- one measurement, in its own process ---------------------------------------------------
def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def history(space: Any, objective: Callable, n: int, seed: int) -> tuple[Any, list[dict], list[float]]:
    """N random configurations (the same for every tool) and their objective values."""
    import numpy as np

    X = space.sample(n, np.random.default_rng([seed, n, 7]))
    configs = space.decode(X)
    return X, configs, [objective(c) for c in configs]


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from adbo.space import SearchSpace

    tool, n, seed = spec["tool"], int(spec["n"]), int(spec["seed"])
    repeats, warmup, cap = int(spec["repeats"]), int(spec["warmup"]), float(spec["step_cap_s"])
    budget, min_repeats = float(spec["budget_s"]), min(int(spec["repeats"]), int(spec["min_repeats"]))
    cs, objective = make_problem(spec["problem"])
    space = SearchSpace(cs)
    X, configs, values = history(space, objective, n, seed)
    out: dict[str, Any] = {}

    if tool == "adbo":
        from adbo.proposer import Proposer, ProposerSettings
        from adbo.rows import OK

        settings = ProposerSettings()
        out["settings"] = dict(vars(settings))
        rss0 = rss_mib()
        t = time.perf_counter()
        proposer = Proposer(space, maximize=False, seed=seed, worker=0, settings=settings)
        y = np.asarray(values, dtype=float)
        status = np.full(n, OK, dtype=np.int8)
        exclude = set(space.keys(X))
        fit_points: list[int] = []
        proposal = proposer.propose(X, y, status, exclude)  # the first proposal on N results
        out["fill_s"] = time.perf_counter() - t

        def step() -> tuple[float, float]:
            nonlocal X, y, status, proposal
            x = proposal.x
            value = objective(space.decode(x[None])[0])  # the evaluation: not timed
            t0 = time.perf_counter()
            X = np.vstack([X, x[None]])
            y = np.append(y, value)
            status = np.append(status, np.int8(OK))
            exclude.add(space.keys(x[None])[0])
            t1 = time.perf_counter()
            proposal = proposer.propose(X, y, status, exclude)
            t2 = time.perf_counter()
            # The space-filling and random fallbacks report 0 observations: only the surrogate
            # path counts (it may fit on a subsample of the results, see max_fit_points).
            if proposal.n_observations <= 0 or proposal.x is None:
                raise RuntimeError("the surrogate path was not taken: adbo fell back to a random proposal")
            fit_points.append(proposal.n_observations)
            return t1 - t0, t2 - t1
    else:
        from _anchors import ANCHORS

        rss0 = rss_mib()
        t = time.perf_counter()
        anchor = ANCHORS[tool](cs, seed=seed)
        anchor.tell_many(configs, values)
        out["fill_s"] = time.perf_counter() - t
        out["settings"] = anchor.settings()

        def step() -> tuple[float, float]:
            t0 = time.perf_counter()
            config = anchor.ask()
            t1 = time.perf_counter()
            value = objective({k: v for k, v in config.items() if v is not None})  # not timed
            t2 = time.perf_counter()
            anchor.tell(config, value)
            t3 = time.perf_counter()
            return t3 - t2, t1 - t0  # (ingest = tell, propose = ask)

    out["rss_mib_before_fill"] = rss0
    out["rss_mib_after_fill"] = rss_mib()
    for _ in range(warmup):
        step()
    ingest, propose, steps = [], [], []
    capped = False
    for _ in range(repeats):
        a, b = step()
        ingest.append(a)
        propose.append(b)
        steps.append(a + b)
        if a + b > cap:
            capped = True
            break
        if sum(steps) > budget and len(steps) >= min_repeats:
            break  # slow tools: fewer timed steps, never fewer than --min-repeats
    if tool == "adbo":
        out["fit_points"] = fit_points[-1]
    out.update(
        step_s=statistics.median(steps),
        steps_s=steps,
        ingest_s=statistics.median(ingest),
        propose_s=statistics.median(propose),
        n_timed=len(steps),
        capped=capped,
        rss_mib_after_steps=rss_mib(),
        peak_rss_mib=peak_rss_mib(),
    )
    return out


# -- the driver -----------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for pkg in MEASURED_PACKAGES:
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found[pkg] = None
    return found


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--", "adbo", "surrogates")
    return {"commit": git("rev-parse", "HEAD") or None, "engine_has_uncommitted_changes": bool(dirty)}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            mem_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "threads_per_process": 1,
    }


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_child(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    env = dict(os.environ)
    env.update({v: "1" for v in THREAD_VARS})
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"child ran past {timeout_s:.0f} s (fill plus steps) and was killed"}
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return {"skipped": f"child failed (exit {proc.returncode}): " + " | ".join(tail)}
    result = json.loads(lines[-1][len("RESULT "):])
    result["child_wall_s"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="also write the JSON to this file")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated N (default %(default)s)")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help="comma-separated (default %(default)s)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per measurement (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=60.0,
                        help="stop timing a measurement once its timed steps add up to this, after at "
                             "least --min-repeats steps (default %(default)s)")
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--step-cap-s", type=float, default=30.0,
                        help="stop timing once one step exceeds this, and skip larger N for that tool")
    parser.add_argument("--child-timeout-s", type=float, default=600.0,
                        help="kill one measurement (fill plus steps) after this long")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print("RESULT " + json.dumps(measure(json.loads(args.child))), flush=True)
        return

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for p in problems:
        if p not in PROBLEMS:
            parser.error(f"unknown problem {p!r}; choose from {', '.join(PROBLEMS)}")
    for t in tools:
        if t not in TOOLS:
            parser.error(f"unknown tool {t!r}; choose from {', '.join(TOOLS)}")

    from _anchors import ANCHOR_MODULES

    unavailable = {t: f"{ANCHOR_MODULES[t]} is not installed (pip install 'adbo[bench]')"
                   for t in tools if t != "adbo" and importlib.util.find_spec(ANCHOR_MODULES[t]) is None}
    started = time.time()
    report: dict[str, Any] = {
        "benchmark": "step_overhead",
        "what": "median seconds per BO step (ingest one result, refit, propose one) after N results",
        "machine": machine(),
        "versions": versions(),
        "git": git_state(),
        "loadavg_before": loadavg(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"sizes": sizes, "problems": problems, "tools": tools, "repeats": args.repeats,
                     "min_repeats": args.min_repeats, "warmup": args.warmup, "seed": args.seed,
                     "budget_s": args.budget_s, "step_cap_s": args.step_cap_s,
                     "child_timeout_s": args.child_timeout_s},
        "headline_problem": HEADLINE if HEADLINE in problems else problems[0],
        "problems": {},
    }
    for problem in problems:
        results: dict[str, dict[str, Any]] = {t: {} for t in tools}
        stopped: dict[str, str] = dict(unavailable)
        for n in sizes:
            for tool in tools:
                key = str(n)
                if tool in stopped:
                    results[tool][key] = {"skipped": stopped[tool]}
                    continue
                spec = {"tool": tool, "problem": problem, "n": n, "seed": args.seed, "repeats": args.repeats,
                        "warmup": args.warmup, "step_cap_s": args.step_cap_s, "budget_s": args.budget_s,
                        "min_repeats": args.min_repeats}
                print(f"[{time.time() - started:7.1f} s] {problem} N={n} {tool} ...", file=sys.stderr, flush=True)
                r = run_child(spec, args.child_timeout_s)
                results[tool][key] = r
                if "skipped" in r:
                    stopped[tool] = f"skipped after N={n}: {r['skipped']}"
                elif r.get("capped"):
                    stopped[tool] = f"a step at N={n} took {max(r['steps_s']):.1f} s > cap {args.step_cap_s:.0f} s"
                msg = r.get("skipped") or f"{r['step_s']:.4f} s/step (fill {r['fill_s']:.1f} s)"
                print(f"            -> {msg}", file=sys.stderr, flush=True)
        report["problems"][problem] = summarize(results, tools, sizes)

    head = report["problems"][report["headline_problem"]]
    for k, v in head.items():
        if k.endswith("_step_s") or k.startswith("ratio_") or k.startswith("speedup_") or k == "adbo_rss_mib":
            report[k] = v
    report["loadavg_after"] = loadavg()
    report["wall_s"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def summarize(results: dict[str, dict[str, Any]], tools: list[str], sizes: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in tools:
        out[f"{tool}_step_s"] = {str(n): results[tool][str(n)].get("step_s") for n in sizes}
    if "adbo" in tools:
        out["adbo_rss_mib"] = {str(n): results["adbo"][str(n)].get("rss_mib_after_steps") for n in sizes}
        out["adbo_peak_rss_mib"] = {str(n): results["adbo"][str(n)].get("peak_rss_mib") for n in sizes}
        for anchor in (t for t in tools if t != "adbo"):
            ratio, speedup = {}, {}
            for n in sizes:
                a, b = results["adbo"][str(n)].get("step_s"), results[anchor][str(n)].get("step_s")
                ratio[str(n)] = a / b if a and b else None
                speedup[str(n)] = b / a if a and b else None
            out[f"ratio_adbo_over_{anchor}"] = ratio
            out[f"speedup_vs_{anchor}"] = speedup
    skipped = {f"{t} N={n}": results[t][str(n)]["skipped"] for t in tools for n in sizes
               if "skipped" in results[t][str(n)]}
    if skipped:
        out["skipped"] = skipped
    out["details"] = results
    return out


if __name__ == "__main__":
    main()
