"""``adbo report RUN_DIR``: one self-contained HTML page of a search, to open from a login node.

Everything is drawn with matplotlib into PNGs embedded in the page (no server, no scripts, no files
beside it). Each picture is computed with numpy over arrays, never row by row in Python, so a run of
100,000 evaluations by 2,000 workers reports in seconds: timelines are step functions of sorted
events, the busy-worker plot groups hosts only when there are few, the parallel coordinates show
at most 300 of the best configurations, and the importance model is fitted on at most 3,000 rows.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .failures import error_key
from .results import summarize_scan
from .rows import FAILED, IN_FLIGHT, OK, STOPPED, TIMEOUT
from .storage import scan_run

SECTIONS = ("summary", "best-over-time", "best-over-evaluations", "busy-workers", "curves", "overheads",
            "parallel-coordinates", "importance", "failures")
MAX_HOST_LINES = 12
MAX_PARALLEL_LINES = 300
MAX_IMPORTANCE_ROWS = 3000


def _figure(width: float = 8.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{html.escape(title)}</h2>\n{body}\n</section>'


def _img(png: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _empty(text: str) -> str:
    return f'<p class="empty">{html.escape(text)}</p>'


class _Run:
    """A run's rows as numpy arrays (one pass over the rows)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.info, table, self.reader = scan_run(run_dir)
        self.summary = summarize_scan(run_dir, self.info, table, self.reader)
        rows = table.rows
        self.rows = rows
        self.maximize = self.info.direction == "maximize"
        self.space = self.info.space
        n = len(rows)
        self.status = np.fromiter((r.status for r in rows), dtype=np.int8, count=n)
        self.value = np.fromiter((r.objective for r in rows), dtype=float, count=n)
        self.started = np.fromiter((r.t_started for r in rows), dtype=float, count=n)
        self.finished = np.fromiter((r.t_finished for r in rows), dtype=float, count=n)
        self.overhead = np.fromiter((r.bo_overhead_s for r in rows), dtype=float, count=n)
        self.scan = np.fromiter((float(r.metadata.get("scan_s", math.nan)) for r in rows), dtype=float, count=n)
        self.hosts = [r.hostname for r in rows]
        self.X = np.array([r.x for r in rows], dtype=float).reshape(n, self.space.dim)
        self.t0 = float(np.nanmin(self.started)) if n and np.isfinite(self.started).any() else 0.0


def _time_unit(run: _Run) -> tuple[float, str]:
    """Seconds, minutes or hours, whichever reads best for this run's length."""
    end = np.nanmax(np.concatenate([run.finished, run.started])) if len(run.rows) else run.t0
    span = float(end - run.t0) if np.isfinite(end) else 0.0
    if span > 3 * 3600:
        return 3600.0, "hours"
    if span > 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _best_over(run: _Run, by_time: bool) -> str:
    ok = (run.status == OK) & np.isfinite(run.value) & np.isfinite(run.finished)
    if not ok.any():
        return _empty("No evaluation has succeeded yet.")
    order = np.argsort(run.finished[ok], kind="stable")
    values = run.value[ok][order]
    best = np.maximum.accumulate(values) if run.maximize else np.minimum.accumulate(values)
    fig, ax = _figure()
    if by_time:
        unit, name = _time_unit(run)
        x = (run.finished[ok][order] - run.t0) / unit
        ax.scatter(x, values, s=6, alpha=0.35, color="0.5", label="evaluations")
        ax.step(x, best, where="post", color="C0", label="best so far")
        ax.set_xlabel(f"{name} since the first evaluation started")
    else:
        finished_all = np.sort(run.finished[np.isin(run.status, (OK, FAILED, TIMEOUT, STOPPED)) & np.isfinite(run.finished)])
        x = np.searchsorted(finished_all, run.finished[ok][order], side="right")
        ax.scatter(x, values, s=6, alpha=0.35, color="0.5", label="evaluations")
        ax.step(x, best, where="post", color="C0", label="best so far")
        ax.set_xlabel("evaluations finished (ok, stopped early, failed or timed out)")
    ax.set_ylabel(f"objective ({run.info.direction})")
    spread = values[np.isfinite(values)]
    if len(spread) > 10 and (spread > 0).all() and spread.max() / spread.min() > 1e3:
        ax.set_yscale("log")
    ax.legend(loc="best")
    return _img(_png(fig), "best objective against " + ("time" if by_time else "evaluations"))


def _busy_workers(run: _Run) -> str:
    started = np.isfinite(run.started)
    if not started.any():
        return _empty("No evaluation has started yet.")
    end_of_run = float(np.nanmax(np.concatenate([run.finished[np.isfinite(run.finished)], run.started[started]])))
    ends = np.where(np.isfinite(run.finished), run.finished, end_of_run)[started]
    starts = run.started[started]
    hosts = np.array(run.hosts, dtype=object)[started]

    def steps(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        times = np.concatenate([s, e])
        delta = np.concatenate([np.ones(len(s)), -np.ones(len(e))])
        order = np.argsort(times, kind="stable")
        return (times[order] - run.t0) / unit, np.cumsum(delta[order])

    unit, name = _time_unit(run)

    fig, ax = _figure()
    t, busy = steps(starts, ends)
    ax.step(t, busy, where="post", color="C0", label="all hosts")
    distinct = sorted(set(hosts.tolist()))
    if 1 < len(distinct) <= MAX_HOST_LINES:
        for i, host in enumerate(distinct):
            mask = hosts == host
            ht, hb = steps(starts[mask], ends[mask])
            ax.step(ht, hb, where="post", lw=0.8, color=f"C{(i % 9) + 1}", label=str(host))
    workers = len({r.worker for r in run.rows})
    ax.axhline(workers, color="0.6", ls="--", lw=0.8, label=f"{workers} workers")
    ax.set_xlabel(f"{name} since the first evaluation started")
    ax.set_ylabel("evaluations running")
    ax.legend(loc="lower right", fontsize="small", ncol=2)
    note = "" if len(distinct) <= MAX_HOST_LINES else f"<p>{len(distinct)} hosts: only their sum is drawn.</p>"
    return _img(_png(fig), "busy workers over time") + note


def _overheads(run: _Run) -> str:
    parts = []
    for values, label in ((run.overhead, "BO step (s): scan, fit, propose"), (run.scan, "reading peers' results (s)")):
        v = values[np.isfinite(values) & (values > 0)]
        if len(v):
            parts.append((v, label))
    if not parts:
        return _empty("No overheads recorded yet.")
    _figure()  # selects the Agg backend
    import matplotlib.pyplot as plt

    plt.close("all")
    fig, axes = plt.subplots(1, len(parts), figsize=(4.2 * len(parts), 3.2), dpi=100, squeeze=False)
    rows = []
    for ax, (v, label) in zip(axes[0], parts):
        bins = np.logspace(np.log10(v.min()), np.log10(max(v.max(), v.min() * 1.01)), 40)
        ax.hist(v, bins=bins, color="C0")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("evaluations")
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        rows.append(f"<tr><td>{html.escape(label)}</td><td>{p50:.4g}</td><td>{p90:.4g}</td><td>{p99:.4g}</td></tr>")
    table = "<table><tr><th></th><th>median</th><th>p90</th><th>p99</th></tr>" + "".join(rows) + "</table>"
    return _img(_png(fig), "distributions of BO overhead and scan time") + table


def _best_mask(run: _Run, fraction: float = 0.1) -> np.ndarray:
    ok = np.flatnonzero((run.status == OK) & np.isfinite(run.value))
    if not len(ok):
        return ok
    k = min(MAX_PARALLEL_LINES, max(1, int(math.ceil(fraction * len(ok)))))
    order = np.argsort(-run.value[ok] if run.maximize else run.value[ok], kind="stable")
    return ok[order[:k]]


def _parallel(run: _Run) -> str:
    best = _best_mask(run)
    if len(best) < 2:
        return _empty("Fewer than two successful evaluations.")
    import matplotlib.cm as cm

    X = np.where(run.X[best] < 0, np.nan, run.X[best])  # inactive conditional parameters: gaps
    v = run.value[best]
    span = (v.max() - v.min()) or 1.0
    shade = (v - v.min()) / span if run.maximize else (v.max() - v) / span
    fig, ax = _figure(max(8.0, 0.45 * run.space.dim), 4.0)
    for row, c in sorted(zip(X, shade), key=lambda p: p[1]):
        ax.plot(range(run.space.dim), row, color=cm.viridis(c), alpha=0.6, lw=0.9)
    ax.set_xticks(range(run.space.dim))
    ax.set_xticklabels(run.space.names, rotation=60, ha="right", fontsize="small")
    ax.set_ylabel("position in the parameter's range (0-1)")
    ax.set_ylim(-0.02, 1.02)
    caption = (f"<p>The best {len(best)} evaluations (10% of the successful ones, at most {MAX_PARALLEL_LINES}); "
               "yellow is best. Log-scaled parameters are drawn on their log scale.</p>")
    return _img(_png(fig), "parallel coordinates of the best configurations") + caption


def _importance(run: _Run) -> str:
    ok = np.flatnonzero((run.status == OK) & np.isfinite(run.value))
    if len(ok) < 10:
        return _empty("Parameter importance needs at least 10 successful evaluations.")
    rng = np.random.default_rng(0)
    if len(ok) > MAX_IMPORTANCE_ROWS:
        ok = rng.choice(ok, MAX_IMPORTANCE_ROWS, replace=False)
    from sklearn.ensemble import ExtraTreesRegressor

    model = ExtraTreesRegressor(n_estimators=40, min_samples_leaf=3, random_state=0, n_jobs=1)
    model.fit(run.X[ok], run.value[ok])
    importance = model.feature_importances_
    order = np.argsort(importance)[::-1][:25]
    fig, ax = _figure(8.0, max(2.5, 0.3 * len(order) + 1.0))
    ax.barh([run.space.names[i] for i in order][::-1], importance[order][::-1], color="C0")
    ax.set_xlabel("share of the surrogate's variance reduction (extra trees)")
    return _img(_png(fig), "parameter importance") + (
        f"<p>From an extra-trees surrogate, the model family adbo's workers use, fitted on {len(ok)} "
        "successful evaluations of the encoded parameters.</p>")


MAX_CURVES = 2000
"""Curves drawn at most (the best ones first among finished; the rest sampled): a readable figure."""


def _curves(run: _Run) -> str:
    with_curve = [r for r in run.rows if r.curve is not None and len(r.curve)]
    if not with_curve:
        return _empty("No evaluation reported a learning curve (def objective(params, trial): ... "
                      "trial.report(value, step)).")
    if len(with_curve) > MAX_CURVES:
        pick = np.random.default_rng(0).choice(len(with_curve), MAX_CURVES, replace=False)
        with_curve = [with_curve[i] for i in sorted(pick)]
    fig, ax = _figure()
    styles = {OK: ("C0", 0.8, "finished"), STOPPED: ("0.6", 0.5, "stopped early"),
              IN_FLIGHT: ("C2", 0.8, "running"), FAILED: ("C3", 0.6, "failed or timed out"),
              TIMEOUT: ("C3", 0.6, "failed or timed out")}
    labelled: set[str] = set()
    for r in sorted(with_curve, key=lambda r: r.status == OK):  # finished curves drawn on top
        color, width, label = styles.get(r.status, ("0.8", 0.5, "interrupted"))
        ax.plot(r.curve[:, 0], r.curve[:, 1], color=color, lw=width, alpha=0.7,
                label=None if label in labelled else label)
        labelled.add(label)
    ax.set_xlabel("step (as reported by trial.report)")
    ax.set_ylabel(f"reported value ({run.info.direction})")
    ax.legend(loc="best")
    return _img(_png(fig), "learning curves")


def _failures(run: _Run) -> str:
    failed = [r for r in run.rows if r.status in (FAILED, TIMEOUT)]
    if not failed:
        return _empty("No evaluation failed.")
    groups: Counter[str] = Counter()
    first: dict[str, Any] = {}
    for r in sorted(failed, key=lambda r: (r.t_finished, r.worker, r.seq)):
        key = error_key(r.error)
        groups[key] += 1
        first.setdefault(key, r)
    rows = []
    for key, count in groups.most_common(50):
        r = first[key]
        tail = "\n".join(r.error.rstrip().splitlines()[-6:])
        rows.append(f"<tr><td>{count}</td><td><code>{html.escape(key)}</code><details><summary>first: "
                    f"{html.escape(r.eval_id)}</summary><pre>{html.escape(tail)}</pre></details></td></tr>")
    more = f"<p>{len(groups) - 50} more kinds of error not shown.</p>" if len(groups) > 50 else ""
    return f"<p>{len(failed)} failed evaluations, {len(groups)} kinds of error.</p>" \
           "<table><tr><th>count</th><th>error</th></tr>" + "".join(rows) + "</table>" + more


def _summary(run_dir: str, run: _Run) -> str:
    s = run.summary
    items = [
        ("run", f"{s['run_id'][:8]} ({s['objective']}, {s['direction']})"),
        ("evaluations", f"{s['evaluations']}" + (f" of {s['max_evals']}" if s.get("max_evals") else "")),
        ("ok / stopped early / failed / interrupted / in flight",
         f"{s['ok']} / {s['stopped']} / {s['failures']} / {s['interrupted']} / {s['in_flight']}"),
        ("workers / hosts", f"{s['workers']} / {len(set(run.hosts))}"),
        ("best objective", f"{s['best_objective']}"),
        ("best parameters", f"{s['best_params']}"),
        ("utilization", f"{100 * s['utilization']:.1f}%" if s.get("utilization") is not None else "-"),
        ("evaluations per minute", f"{s['evaluations_per_minute']:.1f}" if s.get("evaluations_per_minute") else "-"),
        ("skipped files", f"{s['segments_skipped']}"),
    ]
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items) + \
        "</table>"


STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}
img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top}pre{white-space:pre-wrap;font-size:small}.empty{color:#777}"""


def write_report(run_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Write the report of ``run_dir`` and return its path (default ``RUN_DIR/report.html``);
    ``output`` may be a directory (the file is ``report.html`` in it) or a file name."""
    t = time.time()
    run_dir = os.fspath(run_dir)
    run = _Run(run_dir)
    out = Path(output) if output else Path(run_dir) / "report.html"
    if out.suffix.lower() not in (".html", ".htm"):
        out.mkdir(parents=True, exist_ok=True)
        out = out / "report.html"
    parts = [
        _section("summary", "Summary", _summary(run_dir, run)),
        _section("best-over-time", "Best value over time", _best_over(run, by_time=True)),
        _section("best-over-evaluations", "Best value over evaluations", _best_over(run, by_time=False)),
        _section("busy-workers", "Busy workers over time", _busy_workers(run)),
        _section("curves", "Learning curves", _curves(run)),
        _section("overheads", "BO overhead and scan time", _overheads(run)),
        _section("parallel-coordinates", "Parallel coordinates of the best 10%", _parallel(run)),
        _section("importance", "Parameter importance", _importance(run)),
        _section("failures", "Failures by error", _failures(run)),
    ]
    title = f"adbo report: {os.path.abspath(run_dir)}"
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>{len(run.rows)} rows, made {time.strftime('%Y-%m-%d %H:%M:%S')} in {time.time() - t:.1f} s.</p>\n"
            + "\n".join(parts) + "\n</body></html>\n")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
