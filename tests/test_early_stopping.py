"""Early stopping as users run it: scripts in fresh directories whose objectives report learning
curves, real worker processes, curves in real HDF5 shards, decisions against peers' stored curves."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

import adbo
from adbo.rows import IN_FLIGHT, INTERRUPTED, OK, STOPPED, EvalRow
from adbo.stopping import CurveBook, Extrapolation, MedianRule, SuccessiveHalving, extrapolate, make_stopper
from adbo.storage import SegmentReader, SegmentWriter, open_run, scan_run
from adbo.space import SearchSpace
from adbo.trial import Trial

from user_scripts import UserRun, rows, wait_for, write

# The quality of a configuration is fixed from its first epoch on (value = x at every step), so
# where each evaluation ranks at a rung is known in advance.
CURVES = """
    import json
    import sys
    import time
    import adbo

    SLEEP = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0

    def objective(params, trial):
        for epoch in range(1, 10):
            time.sleep(SLEEP)
            trial.report(params["x"], step=epoch)
            if trial.should_prune():
                with open(f"pruned-{params['x']:.6f}.txt", "w") as f:
                    f.write(str(epoch))
                raise adbo.TrialPruned()
        return params["x"]

    if __name__ == "__main__":
        options = json.loads(sys.argv[2])
        result = adbo.optimize(objective, {"x": (0.0, 1.0)}, "run", direction="minimize", progress=False,
                               site=sys.argv[1], **options)
        print(adbo.format_summary(result))
        sys.exit(adbo.exit_code(result))
"""


def _launch(tmp_path, site: str, options: dict, sleep: float = 0.0, timeout: float = 180,
            codes: tuple[int, ...] = (0,)) -> UserRun:
    run = UserRun(tmp_path, "search.py", site, json.dumps(options), str(sleep))
    try:
        code = run.wait(timeout)
    finally:
        run.kill_all()
    assert code in codes, run.stderr[-3000:]
    return run


def test_a_worker_stops_an_evaluation_at_a_rung_because_of_peers_stored_curves(tmp_path):
    write(tmp_path, "search.py", CURVES)
    # First launch: four complete curves, no stopping.
    _launch(tmp_path, "local", {"workers": 2, "max_evals": 4, "n_initial": 4})
    first = adbo.load_results(tmp_path / "run")
    assert (first.status == "ok").all() and first.curve.map(len).eq(9).all()
    # Second launch, one worker process, ASHA: every new evaluation faces those four at rung 1.
    run = _launch(tmp_path, "local", {"workers": 1, "max_evals": 10, "n_initial": 4, "stopper": "asha",
                                      "stopper_options": {"min_step": 1, "reduction": 3, "min_peers": 3,
                                                          "protect_best": 0}})  # the rule alone
    frame = adbo.load_results(tmp_path / "run")
    new = frame.iloc[4:]
    assert len(new) == 6
    worst_before = first.objective.max()
    for _, row in new.iterrows():
        # Rung 1 keeps the best max(1, n // 3) of the n <= 10 curves there: a configuration worse
        # than all four stored curves ranks 5th or lower, so it cannot be among them.
        if row.objective > worst_before:
            assert row.status == "stopped" and row.step == 1.0, row.to_dict()
    stopped = new[new.status == "stopped"]
    assert len(stopped) >= 3
    for _, row in stopped.iterrows():
        assert row.step in (1.0, 3.0, 9.0)
        assert row.curve[-1][0] == row.step and row.objective == row.curve[-1][1]
        assert "successive halving" in row.metadata_stop_reason
        # The objective itself saw should_prune() become True at that step (in its own process).
        assert (tmp_path / f"pruned-{row.params_x:.6f}.txt").read_text() == str(int(row.step))
    assert "stopped early" in run.stdout
    curves = adbo.load_curves(tmp_path / "run")
    assert set(curves.columns) == {"eval_id", "worker", "seq", "status", "step", "value"}
    assert len(curves) == sum(len(c) for c in frame.curve)


# Crossing curves: the configurations that end best (small x) look worst until their last epoch.
CROSSING = """
    import json
    import sys
    import adbo

    def objective(params, trial):
        x = params["x"]
        for epoch in range(1, 10):
            trial.report(x if epoch == 9 else 2.0 - x, step=epoch)
            if trial.should_prune():
                raise adbo.TrialPruned()
        return x

    if __name__ == "__main__":
        result = adbo.optimize(objective, {"x": (0.0, 1.0)}, "run", direction="minimize", progress=False,
                               site="local", workers=1, max_evals=14, n_initial=4, seed=3, stopper="asha",
                               stopper_options=json.loads(sys.argv[1]))
        print(adbo.format_summary(result))
"""


@pytest.mark.parametrize("protect_best", [0, 2])
def test_the_surrogate_vetoes_stopping_the_proposals_it_expects_among_the_best(tmp_path, protect_best):
    write(tmp_path, "search.py", CROSSING)
    run = UserRun(tmp_path, "search.py", json.dumps({"min_peers": 2, "protect_best": protect_best}))
    try:
        assert run.wait(240) in (0, 1), run.stderr[-3000:]
    finally:
        run.kill_all()
    frame = adbo.load_results(tmp_path / "run")
    assert len(frame) == 14
    ranked = frame[frame.metadata_predicted_rank.notna()]  # surrogate proposals carry their predicted rank
    assert len(ranked) >= 6 and (ranked.metadata_predicted_rank >= 0).all()
    assert frame.metadata_predicted_rank.iloc[:4].isna().all()  # the space-filling design has none
    promising = ranked[ranked.metadata_predicted_rank < 2]
    log = "".join(p.read_text() for p in (tmp_path / "run").rglob("worker-*.log"))
    if protect_best:
        # Kept though step 1 ranked them last (2 - x is worst for the small x the search aims at).
        assert len(promising) and (promising.status == "ok").all(), promising[["params_x", "status"]]
        assert "(protect_best)" in log
        assert (frame.status == "stopped").any()  # the rule still stops everything else it would
    else:
        assert "(protect_best)" not in log
    if not protect_best:
        assert (frame.status == "stopped").sum() > (frame.status == "ok").sum()


def test_stopped_rows_keep_their_curves_and_export_to_optuna_as_pruned(tmp_path):
    optuna = pytest.importorskip("optuna")
    write(tmp_path, "search.py", CURVES)
    _launch(tmp_path, "local-threads", {"workers": 3, "max_evals": 15, "n_initial": 3, "stopper": "median",
                                        "stopper_options": {"min_peers": 2}})
    frame = adbo.load_results(tmp_path / "run")
    assert (frame.status == "stopped").any() and (frame.status == "ok").any()
    for _, row in frame.iterrows():
        steps = [s for s, _ in row.curve]
        assert steps == list(range(1, len(steps) + 1)) and all(v == row.params_x for _, v in row.curve)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    from adbo.optuna_export import export_to_optuna
    name, _ = export_to_optuna(tmp_path / "run", storage)
    study = optuna.load_study(study_name=name, storage=storage)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == (frame.status == "stopped").sum()
    assert all(t.intermediate_values and max(t.intermediate_values) == t.user_attrs["metadata_step"] for t in pruned)
    from adbo.report import write_report
    page = write_report(tmp_path / "run").read_text()
    curves = page[page.index('<section id="curves">'):]
    assert curves.index("data:image/png;base64,") < curves.index("</section>")  # the curves are drawn


def _status(tmp_path) -> str:
    import subprocess
    import sys
    from pathlib import Path

    adbo_cli = Path(sys.executable).parent / "adbo"
    out = subprocess.run([str(adbo_cli), "status", str(tmp_path / "run")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_relaunch_mid_curve_keeps_the_curves_and_judges_against_them(tmp_path):
    write(tmp_path, "search.py", CURVES)
    options = {"workers": 2, "max_evals": 12, "n_initial": 2, "stopper": "asha",
               "stopper_options": {"min_step": 1, "reduction": 3, "min_peers": 2, "protect_best": 0}}
    run = UserRun(tmp_path, "search.py", "local", json.dumps(options), "0.6")
    try:
        wait_for(lambda: any(r.status == IN_FLIGHT for r in rows(tmp_path / "run")), 90, "an evaluation")
        assert "launch       running: launch" in _status(tmp_path)  # adbo status says a launch holds it
        # Running curves are republished at the rungs (steps 1, 3, 9): wait until one is stored.
        running = wait_for(lambda: [(r.worker, r.seq) for r in rows(tmp_path / "run")
                                    if r.status == IN_FLIGHT and r.curve is not None and len(r.curve) >= 3],
                           90, "a running curve published at step 3", poll=0.05)
        run.signal_group(signal.SIGINT)
        assert run.wait(60) == 130, run.stderr[-3000:]
    finally:
        run.kill_all()
    assert "none running" in _status(tmp_path)
    cut = {(r.worker, r.seq): r for r in rows(tmp_path / "run") if r.status == INTERRUPTED}
    assert running[0] in cut and len(cut[running[0]].curve) >= 3  # the curve up to the Ctrl-C is kept
    kept = {key: r.curve.copy() for key, r in cut.items() if r.curve is not None}
    stored = [r.curve.copy() for r in rows(tmp_path / "run") if r.curve is not None]
    before = {(r.worker, r.seq) for r in rows(tmp_path / "run")}
    # One worker now: its first evaluation meets only the stored curves at rung 1. Every curve
    # of this objective is flat, so it must stop there exactly when a stored one is better.
    # (If every evaluation is stopped, no evaluation ran to its end: exit 1, said in one line.)
    relaunch = _launch(tmp_path, "local", {**options, "workers": 1}, sleep=0.02, codes=(0, 1))
    after = {(r.worker, r.seq): r for r in rows(tmp_path / "run")}
    for key, curve in kept.items():
        assert after[key].status == INTERRUPTED and np.array_equal(after[key].curve, curve)
    statuses = [r.status for r in after.values()]
    assert statuses.count(OK) + statuses.count(STOPPED) == 12 and IN_FLIGHT not in statuses
    first_new = min((r for key, r in after.items() if key not in before), key=lambda r: r.t_submitted)
    # Every stored curve (cut, finished or stopped) is a peer at rung 1; with its own, n curves
    # meet there (min_peers = 2 is met by any one stored curve) and ASHA keeps the best n // 3.
    stored_at_rung_1 = np.array([c[0, 1] for c in stored])
    keep = max(1, (len(stored_at_rung_1) + 1) // 3)
    expect_stop = int((stored_at_rung_1 < first_new.params["x"]).sum()) >= keep
    assert (first_new.status == STOPPED and first_new.curve[-1, 0] == 1.0) == expect_stop, first_new
    if OK not in statuses:
        assert "stopped early" in relaunch.stdout and "ran to its end" in relaunch.stderr


def test_objectives_without_a_trial_argument_are_unaffected_and_the_user_is_told(tmp_path):
    write(tmp_path, "plain.py", """
        import adbo

        def objective(params):
            return params["x"]

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"x": (0.0, 1.0)}, "run", site="local-threads", workers=2,
                                   max_evals=6, stopper="asha", progress=False)
            print(adbo.format_summary(result))
    """)
    run = UserRun(tmp_path, "plain.py")
    assert run.wait(120) == 0, run.stderr[-2000:]
    assert "takes no trial argument" in run.stderr
    frame = adbo.load_results(tmp_path / "run")
    assert (frame.status == "ok").all() and frame.curve.isna().all() and len(frame) == 6


@pytest.mark.parametrize("args, message", [
    (["--stopper", "hyperband"], "invalid choice"),
    (["--stopper", "asha", "--stopper-options", "reduction=1"], "reduction must be above 1"),
    (["--stopper", "asha", "--stopper-options", "eta=3"], "has no option eta"),
    (["--stopper", "asha", "--stopper-options", "min_step"], "is not KEY=NUMBER"),
])
def test_bad_stopper_flags_are_refused_before_anything_runs(tmp_path, args, message):
    from user_scripts import ROOT

    run = UserRun(tmp_path, str(ROOT / "workflows" / "synthetic_hpo.py"), "--run-dir", "run", *args)
    assert run.wait(60) != 0
    assert message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# -- the rules and the storage underneath, on real segment files --------------------------------

def _book(curves: dict, maximize: bool = False) -> CurveBook:
    book = CurveBook(maximize)
    for key, values in curves.items():
        book.update(key, np.arange(1, len(values) + 1), np.asarray(values, dtype=float))
    return book


def test_successive_halving_keeps_the_best_third_of_every_curve_at_the_rung():
    asha = SuccessiveHalving(min_step=1, reduction=3, min_peers=3)
    peers = {(0, i): [v, v, v] for i, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])}
    book = _book({**peers, (9, 0): [0.15]})
    assert asha.should_stop(book, (9, 0)) is None  # 2nd of 6: the best 2 continue
    book = _book({**peers, (9, 0): [0.25]})
    assert "ranked 3 of 6" in asha.should_stop(book, (9, 0))
    # Between rungs nothing is decided; at rung 3 the running best counts (a noisy epoch is forgiven).
    book = _book({**peers, (9, 0): [0.15, 0.9]})
    assert asha.should_stop(book, (9, 0)) is None
    book = _book({**peers, (9, 0): [0.15, 0.9, 0.9]})
    assert asha.should_stop(book, (9, 0)) is None  # best so far 0.15 at rung 3: 2nd of 6
    # Maximizing: the same ranks mirrored.
    book = _book({**{k: [-v for v in c] for k, c in peers.items()}, (9, 0): [-0.25]}, maximize=True)
    assert asha.should_stop(book, (9, 0)) is not None
    # With a window, only the newest curves at the rung count: old weak ones no longer make it lax.
    old_weak = {(1, i): [2.0 + i] for i in range(30)}  # reached rung 1 first
    recent = {(0, i): [v] for i, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])}
    book = _book({**old_weak, **recent, (9, 0): [0.25]})
    assert SuccessiveHalving(min_peers=3).should_stop(book, (9, 0)) is None  # 3rd of 36: best 12 go on
    assert "ranked 3 of 6" in SuccessiveHalving(min_peers=3, window=5).should_stop(book, (9, 0))
    # Too few curves at the rung: nobody is judged.
    assert SuccessiveHalving(min_peers=7).should_stop(_book({**peers, (9, 0): [0.9]}), (9, 0)) is None


def test_the_finishers_bar_follows_the_curves_that_ended_best():
    # Five finished curves (10 steps); the best three ended at 0.10-0.12 after being 0.30-0.40 at step 1.
    finished = {(0, i): [start] + [end] * 9 for i, (start, end) in
                enumerate([(0.30, 0.10), (0.35, 0.11), (0.40, 0.12), (0.20, 0.50), (0.25, 0.60)])}
    early_weak = {(1, i): [2.0 + i] for i in range(20)}  # space-filling curves stopped at step 1
    bar = SuccessiveHalving(min_peers=3, finishers=3)
    # 0.45 at step 1 is 6th of 26 there: the rank test alone lets it go on ...
    assert SuccessiveHalving(min_peers=3).should_stop(_book({**finished, **early_weak, (9, 0): [0.45]}), (9, 0)) is None
    # ... but the three best finishers were all at 0.40 or better there.
    reason = bar.should_stop(_book({**finished, **early_weak, (9, 0): [0.45]}), (9, 0))
    assert "best 3 finished evaluations all were (0.4)" in reason
    assert bar.should_stop(_book({**finished, **early_weak, (9, 0): [0.38]}), (9, 0)) is None
    # As the command line gives it (--stopper-options finishers=3,ranks=0: numbers parse as floats).
    from adbo.workflow_cli import parse_stopper_options
    cli = make_stopper("asha", **parse_stopper_options("finishers=3,min_peers=3"))
    assert "best 3 finished" in cli.should_stop(_book({**finished, **early_weak, (9, 0): [0.45]}), (9, 0))
    # Crossing curves: the fast starters (0.20, 0.25 at step 1) ended worst, so being a slow
    # starter is no reason to stop, and with ranks=0 the rank test no longer stops it either.
    slow = {**finished, **{(2, i): [0.1 + 0.01 * i] for i in range(10)}, (9, 0): [0.39]}
    assert "ranked" in SuccessiveHalving(min_peers=3, finishers=3).should_stop(_book(slow), (9, 0))
    assert SuccessiveHalving(min_peers=3, finishers=3, ranks=0).should_stop(_book(slow), (9, 0)) is None
    # Fewer finished curves than finishers: the rank test alone decides.
    few = {k: v for k, v in finished.items() if k[1] < 2}
    assert SuccessiveHalving(min_peers=3, finishers=3, ranks=0).should_stop(
        _book({**few, **early_weak, (9, 0): [0.45]}), (9, 0)) is None
    # Maximizing: the same, mirrored.
    mirrored = {k: [-v for v in c] for k, c in {**finished, **early_weak}.items()}
    assert bar.should_stop(_book({**mirrored, (9, 0): [-0.45]}, maximize=True), (9, 0)) is not None
    assert bar.should_stop(_book({**mirrored, (9, 0): [-0.38]}, maximize=True), (9, 0)) is None


def test_median_and_extrapolation_rules():
    median = MedianRule(min_step=2, min_peers=3)
    peers = {(0, i): list(np.linspace(1.0, 0.2 + 0.1 * i, 10)) for i in range(5)}
    assert median.should_stop(_book({**peers, (9, 0): [2.0]}), (9, 0)) is None  # before min_step
    assert "median rule" in median.should_stop(_book({**peers, (9, 0): [2.0, 2.0]}), (9, 0))
    assert median.should_stop(_book({**peers, (9, 0): [0.5, 0.5]}), (9, 0)) is None
    steps = np.arange(1, 10.0)
    assert abs(extrapolate(steps, 0.3 + 0.7 * steps ** -0.8, 50) - (0.3 + 0.7 * 50 ** -0.8)) < 0.02
    rule = Extrapolation(max_step=10, min_step=1, reduction=3)
    slow = list(0.9 + 0.5 * np.arange(1, 4.0) ** -0.5)  # heads for ~0.95, peers end at 0.2-0.6
    assert "extrapolation" in rule.should_stop(_book({**peers, (9, 0): slow}), (9, 0))
    fast = list(0.05 + 0.95 * np.arange(1, 4.0) ** -1.5)
    assert rule.should_stop(_book({**peers, (9, 0): fast}), (9, 0)) is None


def test_unknown_stoppers_and_options_name_the_fix():
    with pytest.raises(ValueError, match="choose one of none, asha, median, extrapolate"):
        make_stopper("hyperband")
    with pytest.raises(ValueError, match="its options: finishers, max_step, min_peers, min_step, protect_best, ranks, "
                                         "reduction, window"):
        make_stopper("asha", eta=3)
    with pytest.raises(ValueError, match="protect_best must be 0"):
        make_stopper("median", protect_best=-1)
    veto = make_stopper("extrapolate", protect_best=3)
    assert veto.protects(2) and not veto.protects(3) and not veto.protects(None)
    assert make_stopper("asha").protects(2) and not make_stopper("asha").protects(3)  # on by default
    assert not make_stopper("asha", protect_best=0).protects(0) and not make_stopper("none").protects(0)


def test_trial_report_checks_its_input():
    trial = Trial({})
    trial.report(0.5, step=1)
    with pytest.raises(ValueError, match="steps must increase"):
        trial.report(0.4, step=1)
    with pytest.raises(TypeError, match="two numbers"):
        trial.report("high", step=2)
    assert not trial.should_prune() and trial.last_step == 1.0


def test_curves_survive_compaction_and_readers_keep_the_longest(tmp_path):
    space = SearchSpace({"x": (0.0, 1.0)})
    info = open_run(tmp_path, space, "o:f", "minimize")
    writer = SegmentWriter(tmp_path, 0, info.run_id, 1, compact_every=3)
    base = EvalRow(worker=0, seq=0, status=IN_FLIGHT, x=np.array([0.5]), params={"x": 0.5})
    reader = SegmentReader(tmp_path, info.run_id, 1, info.max_workers)
    book = CurveBook()
    for n in (1, 3, 5):  # a running curve republished at steps 1, 3 and 5
        writer.append([base.evolve(curve=np.column_stack([np.arange(1, n + 1), np.full(n, 0.1 * n)]))])
        for batch in reader.scan_batches(with_text=False, with_curves=True):
            for i, points in batch.curves.items():
                book.update((0, 0), points[:, 0], points[:, 1])
        assert len(book.steps[(0, 0)]) == n
    writer.append([base.evolve(status=STOPPED, objective=0.5, curve=np.array([[1, .1], [2, .2], [3, .5]])),
                   base.evolve(seq=1)])
    writer.append([base.evolve(seq=1, curve=np.array([[1.0, 0.7]]))])  # compaction happens here
    assert any(p.name.endswith("-c.h5") for p in (tmp_path / "shards").rglob("*.h5"))
    _, table, _ = scan_run(tmp_path)
    by_seq = {r.seq: r for r in table.rows}
    assert by_seq[0].status == STOPPED and by_seq[0].curve.tolist() == [[1, .1], [2, .2], [3, .5]]
    assert by_seq[1].status == IN_FLIGHT and by_seq[1].curve.tolist() == [[1.0, 0.7]]
    # A worker's table (numbers only) reads no curves unless asked.
    fresh = SegmentReader(tmp_path, info.run_id, 1, info.max_workers)
    assert all(b.curves is None for b in fresh.scan_batches(with_text=False))


def test_a_segment_with_a_malformed_curve_dataset_is_skipped_with_its_reason(tmp_path):
    import h5py
    import warnings

    space = SearchSpace({"x": (0.0, 1.0)})
    info = open_run(tmp_path, space, "o:f", "minimize", {"workers": 2})
    good = SegmentWriter(tmp_path, 0, info.run_id, 1)
    good.append([EvalRow(worker=0, seq=0, status=OK, x=np.array([0.5]), params={"x": 0.5}, objective=0.5,
                         curve=np.array([[1.0, 0.7], [2.0, 0.5]]))])
    odd = SegmentWriter(tmp_path, 1, info.run_id, 1)
    name = odd.append([EvalRow(worker=1, seq=0, status=OK, x=np.array([0.2]), params={"x": 0.2}, objective=0.2,
                               curve=np.array([[1.0, 0.3]]))])
    path = next((tmp_path / "shards").rglob(name))
    with h5py.File(path, "r+") as f:  # a stranger's edit: points that refer to rows the segment lacks
        points = f["curve"][()]
        points["row"] = 7
        del f["curve"]
        f.create_dataset("curve", data=points)
    reader = SegmentReader(tmp_path, info.run_id, 1, info.max_workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = reader.scan_batches(with_text=False, with_curves=True)
    assert [len(b) for b in batches] == [1] and batches[0].curves[0].tolist() == [[1.0, 0.7], [2.0, 0.5]]
    assert any("curve points refer to rows" in why for why in reader.skipped.values())
    assert path.exists()  # never removed
