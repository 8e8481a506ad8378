"""Reading a run back: a pandas table of every evaluation and the figures ``adbo status`` shows."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

from .storage import BUDGET_STATUSES, IN_FLIGHT, OK, SHARD_DIR, STATUS_NAMES, EvalRow, ResultTable, scan_run




def rows_to_frame(rows: list[EvalRow], param_names: list[str]) -> pd.DataFrame:
    """One row per evaluation; parameters as ``params_<name>`` columns (Optuna's convention)."""
    records = []
    for r in rows:
        rec: dict[str, Any] = {
            "eval_id": r.eval_id,
            "worker": r.worker,
            "seq": r.seq,
            "status": STATUS_NAMES.get(r.status, str(r.status)),
            "objective": r.objective,
            "t_submitted": r.t_submitted,
            "t_started": r.t_started,
            "t_finished": r.t_finished,
            "duration_s": r.t_finished - r.t_started,
            "bo_overhead_s": r.bo_overhead_s,
            "n_observations": r.n_observations,
            "hostname": r.hostname,
            "error": r.error,
            "step": float(r.curve[-1, 0]) if r.curve is not None and len(r.curve) else float("nan"),
            "curve": [tuple(p) for p in r.curve.tolist()] if r.curve is not None else None,
        }
        for name in param_names:
            rec[f"params_{name}"] = r.params.get(name)
        for key, value in r.metadata.items():
            rec[f"metadata_{key}"] = value
        records.append(rec)
    columns = list(records[0]) if records else [
        "eval_id", "worker", "seq", "status", "objective", "t_submitted", "t_started", "t_finished",
        "duration_s", "bo_overhead_s", "n_observations", "hostname", "error", "step", "curve",
    ] + [f"params_{n}" for n in param_names]
    frame = pd.DataFrame.from_records(records, columns=columns if not records else None)
    if len(frame):
        frame = frame.sort_values(["t_submitted", "worker", "seq"], kind="stable").reset_index(drop=True)
    return frame


def load_results(run_dir: str | os.PathLike, include_in_flight: bool = True) -> pd.DataFrame:
    """All evaluations of a run as a DataFrame (de-duplicated; in-flight rows optional).

    Columns: ``eval_id, worker, seq, status, objective, t_submitted, t_started, t_finished,
    duration_s, bo_overhead_s, n_observations, hostname, error, step, curve``, then
    ``params_<name>`` for each hyperparameter and ``metadata_<key>`` for what the objective
    returned besides its value. ``curve`` is the list of (step, value) the objective reported
    (None if it reported nothing), ``step`` the last of those steps; a ``stopped`` evaluation's
    ``objective`` is its last reported value. ``load_curves`` gives the curves as a long table.
    """
    info, table, _ = scan_run(run_dir)
    rows = [r for r in table.rows if include_in_flight or r.status != IN_FLIGHT]
    return rows_to_frame(rows, info.space.names)


def load_curves(run_dir: str | os.PathLike, include_in_flight: bool = True) -> pd.DataFrame:
    """Every reported learning-curve point: one row per (evaluation, step), ready to plot.

    Columns: ``eval_id, worker, seq, status, step, value``; running evaluations show the part of
    their curve published so far (at the stopper's decision points).
    """
    _, table, _ = scan_run(run_dir)
    parts = []
    for r in table.rows:
        if r.curve is None or not len(r.curve) or (r.status == IN_FLIGHT and not include_in_flight):
            continue
        parts.append(pd.DataFrame({"eval_id": r.eval_id, "worker": r.worker, "seq": r.seq,
                                   "status": STATUS_NAMES.get(r.status, str(r.status)),
                                   "step": r.curve[:, 0], "value": r.curve[:, 1]}))
    columns = ["eval_id", "worker", "seq", "status", "step", "value"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def launch_windows(rows: list[EvalRow]) -> list[tuple[list[EvalRow], float, float]]:
    """Rows grouped by the launch that ran them (``metadata["launch"]``), each with its window:
    first start to last timestamp. Rows stored before launches were recorded form one group."""
    groups: dict[str, list[EvalRow]] = {}
    for r in rows:
        if math.isfinite(r.t_started):
            groups.setdefault(str(r.metadata.get("launch", "")), []).append(r)
    out = []
    for members in groups.values():
        t0 = min(r.t_started for r in members)
        t1 = max(max((r.t_finished for r in members if math.isfinite(r.t_finished)), default=t0),
                 max(r.t_started for r in members))
        out.append((members, t0, t1))
    return out


def utilization(table: ResultTable) -> float:
    """Busy time over available time, as the ADBO paper defines it, counted per launch.

    Sum over evaluations of (finished - started), in-flight ones cut at the end of their launch's
    window, divided by the sum over launches of (workers x window); a launch's window runs from
    its first start to its last timestamp, so the time between a stop and a relaunch is not
    counted as idle.
    """
    busy = available = 0.0
    for members, t0, t1 in launch_windows(table.rows):
        window = t1 - t0
        if window <= 0:
            continue
        busy += sum(max(0.0, (r.t_finished if math.isfinite(r.t_finished) else t1) - r.t_started) for r in members)
        available += len({r.worker for r in members}) * window
    return busy / available if available > 0 else float("nan")


def summarize(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The figures behind ``adbo status --json``.

    ``skipped_files`` maps each file the scan left out (relative to the run directory) to why,
    so that a user can find and fix it; ``segments_skipped`` is their count.
    """
    info, table, reader = scan_run(run_dir)
    return summarize_scan(run_dir, info, table, reader)


def summarize_scan(run_dir: str | os.PathLike, info: Any, table: ResultTable, reader: Any) -> dict[str, Any]:
    """``summarize`` of a run already read with ``scan_run`` (the report reads it once for all)."""
    rows = table.rows
    counts = {name: 0 for name in STATUS_NAMES.values()}
    for r in rows:
        counts[STATUS_NAMES[r.status]] += 1
    ok = [r for r in rows if r.status == OK and math.isfinite(r.objective)]
    maximize = info.direction == "maximize"
    best = (max if maximize else min)(ok, key=lambda r: r.objective) if ok else None
    wall = sum(t1 - t0 for _, t0, t1 in launch_windows(rows))  # launches' windows, not the gaps between
    evaluations = sum(1 for r in rows if r.status in BUDGET_STATUSES)
    return {
        "run_dir": os.fspath(run_dir),
        "run_id": info.run_id,
        "objective": info.objective,
        "direction": info.direction,
        "evaluations": evaluations,
        "ok": counts["ok"],
        "failures": counts["failed"] + counts["timeout"],
        "timeouts": counts["timeout"],
        "interrupted": counts["interrupted"],
        "stopped": counts["stopped"],
        "in_flight": counts["in_flight"],
        "workers": len({r.worker for r in rows}),
        "best_objective": best.objective if best else None,
        "best_params": best.params if best else None,
        "best_eval_id": best.eval_id if best else None,
        "utilization": _finite_or_none(utilization(table)) if rows else None,
        "wall_time_s": wall,
        "evaluations_per_minute": (60.0 * evaluations / wall) if wall > 0 else None,
        "median_bo_overhead_s": float(np.nanmedian([r.bo_overhead_s for r in rows])) if rows else None,
        "segments_skipped": len(reader.skipped),
        "skipped_files": {os.path.normpath(os.path.join(SHARD_DIR, key)): why
                          for key, why in sorted(reader.skipped.items())},
        "max_evals": info.settings.get("max_evals"),
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
