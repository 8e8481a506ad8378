"""Shared fixtures: everything runs against real files in pytest's temporary directories."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PARSL_TRACKING", "false")


@pytest.fixture
def run_dir(tmp_path):
    return str(tmp_path / "run")
