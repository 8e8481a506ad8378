"""Parsl configurations, one module per site (installed as ``adbo.site_configs``).

Each module ``site_configs/NAME.py`` defines ``make_config(workers, run_dir, **options)`` that
returns a fresh ``parsl.Config`` (a Config cannot be loaded twice, so it is always built anew)
with room for exactly ``workers`` long-lived BO workers. ``--site NAME`` picks the module;
dashes and underscores are interchangeable.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any


def available_sites() -> list[str]:
    return sorted(
        m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")
    )


def load_site(name: str) -> ModuleType:
    """The site module for ``name``; an unknown name raises with the list of known ones."""
    module_name = name.replace("-", "_")
    known = available_sites()
    if name.replace("_", "-") not in known:
        raise ValueError(f"unknown site {name!r}; known sites: {', '.join(known)}")
    return importlib.import_module(f"{__name__}.{module_name}")


def make_config(name: str, workers: int, run_dir: str, **options: Any):
    return load_site(name).make_config(workers=workers, run_dir=run_dir, **options)
