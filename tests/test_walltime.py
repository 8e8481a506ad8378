import time

import adbo

from failing_objectives import slow_on_high_a

SPACE = {"a": (0.0, 1.0), "b": (0.0, 1.0)}


def test_a_short_allocation_stops_cleanly_and_a_relaunch_completes(tmp_path):
    run_dir = str(tmp_path / "run")
    t0 = time.time()
    first = adbo.launch(slow_on_high_a, SPACE, run_dir, site="local-threads", workers=2, max_evals=40,
                        direction="minimize", walltime=3.0, walltime_margin=0.5, n_initial=40, progress=False)
    assert time.time() - t0 < 30
    assert not first.worker_errors
    df = adbo.load_results(run_dir)
    cut = df[df.status == "interrupted"]
    assert len(cut) >= 1 and cut.error.str.contains("walltime deadline").all()
    assert (cut.params_a >= 0.7).all()
    assert (df.status == "in_flight").sum() == 0
    # Nothing finished after the deadline (launch time + 3 s - 0.5 s margin, plus scheduling slack).
    assert df.t_finished.max() <= df.t_submitted.min() + 3.0
    assert first.summary["evaluations"] < 40
    second = adbo.launch(slow_on_high_a, SPACE, run_dir, site="local-threads", workers=2, max_evals=40,
                         direction="minimize", n_initial=5, eval_timeout=1.0, progress=False)
    assert not second.worker_errors
    df = adbo.load_results(run_dir)
    assert df.status.isin(["ok", "failed", "timeout"]).sum() >= 40
    assert not df.duplicated(["worker", "seq"]).any()
    for _, rows in df.groupby("worker"):
        assert sorted(rows.seq) == list(range(len(rows)))
