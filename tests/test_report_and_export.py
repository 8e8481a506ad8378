"""`adbo report` and `adbo export --optuna-storage` on real run directories, through the command."""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import adbo
from adbo.report import SECTIONS

from failing_objectives import flaky

ADBO = os.path.join(os.path.dirname(sys.executable), "adbo")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    adbo.launch(flaky, {"a": (0.0, 1.0), "b": (-1.0, 1.0)}, str(run_dir), site="local-threads", workers=3,
                max_evals=40, direction="minimize", eval_timeout=1.0, seed=4, progress=False)
    return run_dir


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections: dict[str, list[tuple[str, dict]]] = {}
        self.current = None
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs.get("id")
            self.sections[self.current] = []
        elif self.current is not None:
            self.sections[self.current].append((tag, attrs))
        for key in ("src", "href"):
            if key in attrs and not str(attrs[key]).startswith("data:"):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


def test_report_is_one_self_contained_page_with_every_section(finished_run, tmp_path):
    out = subprocess.run([ADBO, "report", str(finished_run), "-o", str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    page = tmp_path / "out" / "report.html"
    assert out.stdout.strip() == f"wrote {page}"
    parser = _Page()
    parser.feed(page.read_text())
    assert list(parser.sections) == list(SECTIONS)
    assert parser.external == [], "everything is embedded: it opens from a login node without a server"
    images = {key: [a for t, a in tags if t == "img"] for key, tags in parser.sections.items()}
    for key in ("best-over-time", "best-over-evaluations", "busy-workers", "overheads", "parallel-coordinates",
                "importance"):
        assert len(images[key]) == 1 and images[key][0]["src"].startswith("data:image/png;base64,"), key
    text = page.read_text()
    # flaky raises in one region and returns NaN in another: both kinds appear, counted.
    assert "ValueError: region a&lt;0.2 is invalid" in text and "objective returned nan" in text
    assert any(t == "table" for t, _ in parser.sections["summary"])


def test_export_into_an_optuna_storage(finished_run, tmp_path):
    optuna = pytest.importorskip("optuna")
    url = f"sqlite:///{tmp_path / 'adbo.db'}"
    out = subprocess.run([ADBO, "export", str(finished_run), "--optuna-storage", url], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    frame = adbo.load_results(finished_run)
    name = f"adbo-{adbo.summarize(finished_run)['run_id'][:8]}"
    assert out.stdout.strip() == f"wrote {len(frame)} trials to study {name!r} in {url}"
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == len(frame)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == int((frame.status == "ok").sum())
    assert study.best_value == pytest.approx(frame[frame.status == "ok"].objective.min())
    assert set(study.best_params) == {"a", "b"} and study.direction == optuna.study.StudyDirection.MINIMIZE
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert {t.user_attrs["adbo_status"] for t in failed} <= {"failed", "timeout", "interrupted"}
    assert all("adbo_error" in t.user_attrs for t in failed)
    # Optuna's own tools work on it; a second export under the same name is refused, not mixed.
    assert len(study.trials_dataframe()) == len(frame)
    again = subprocess.run([ADBO, "export", str(finished_run), "--optuna-storage", url], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "--study-name" in again.stderr
    assert len(optuna.load_study(study_name=name, storage=url).trials) == len(frame)
