"""What every benchmark script does with its result: name the machine, print JSON, optionally save it."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> str:
    """The machine a figure was measured on, as the README and closing notes quote it."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} ({os.cpu_count()} cores, {memory:.0f} GiB), python {platform.python_version()}"


def emit(out: dict[str, Any], path: str | None) -> None:
    """Print ``out`` as JSON and, when ``path`` is given, write it there too."""
    text = json.dumps(out, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
