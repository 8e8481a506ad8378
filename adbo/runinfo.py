"""``run.json``: the identity of a run (what is searched, how it is scored), fixed at creation."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # ConfigSpace and scipy load slowly; processes that only move rows skip them
    from .space import SearchSpace

FORMAT_VERSION = 1
RUN_FILE = "run.json"
SHARD_DIR = "shards"
LOG_DIR = "logs"
STOP_FILE = "STOP"


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


@dataclass
class RunInfo:
    run_id: str
    space_json: str
    objective: str
    direction: str
    created: float
    settings: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def space(self) -> "SearchSpace":
        from .space import SearchSpace

        return SearchSpace.from_json(self.space_json)

    @property
    def max_workers(self) -> int | None:
        """The largest worker count any launch of this run used; higher writer ids are strangers."""
        value = self.settings.get("max_workers", self.settings.get("workers"))
        return int(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "run_id": self.run_id,
            "created": self.created,
            "objective": self.objective,
            "direction": self.direction,
            "space": json.loads(self.space_json),
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunInfo":
        return cls(
            run_id=d["run_id"],
            space_json=json.dumps(d["space"], sort_keys=True),
            objective=d["objective"],
            direction=d["direction"],
            created=float(d["created"]),
            settings=dict(d.get("settings", {})),
            format_version=int(d.get("format_version", FORMAT_VERSION)),
        )


def read_run_info(run_dir: str | os.PathLike) -> RunInfo:
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirectoryError(
            f"{run_dir} is not an adbo run directory (no {RUN_FILE}); start a search there first"
        ) from None
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path} is not valid JSON ({exc}); it was not written by adbo") from None
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise RunDirectoryError(
            f"{path} has format version {data['format_version']}, newer than this adbo "
            f"({FORMAT_VERSION}); upgrade adbo to read it"
        )
    try:
        return RunInfo.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunDirectoryError(f"{path} lacks {exc}; it was not written by adbo") from None


def _write_atomically(path: Path, info: RunInfo, replace_existing: bool) -> bool:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True))
    try:
        if replace_existing:
            os.replace(tmp, path)
            return True
        os.link(tmp, path)  # fails if another launcher won the race: then we validate theirs
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _differences(existing: RunInfo, space: "SearchSpace", objective: str, direction: str) -> list[str]:
    problems = []
    if existing.space_json != space.to_json():
        old = existing.space
        added = sorted(set(space.names) - set(old.names))
        removed = sorted(set(old.names) - set(space.names))
        changed = sorted(
            n for n in set(old.names) & set(space.names)
            if old.codecs[old.names.index(n)] != space.codecs[space.names.index(n)]
        )
        detail = ", ".join(
            part for part in (
                f"added {added}" if added else "",
                f"removed {removed}" if removed else "",
                f"changed {changed}" if changed else "",
            ) if part
        ) or "conditions differ"
        problems.append(f"the search space differs ({detail})")
    if existing.objective != objective:
        problems.append(f"the objective differs (stored {existing.objective!r}, now {objective!r})")
    if existing.direction != direction:
        problems.append(f"the direction differs (stored {existing.direction!r}, now {direction!r})")
    return problems


def open_run(
    run_dir: str | os.PathLike,
    space: "SearchSpace",
    objective: str,
    direction: str,
    settings: Mapping[str, Any] | None = None,
    group_access: bool = False,
) -> RunInfo:
    """Create the run directory, or reopen it if it holds the same search.

    A relaunch must search the same space with the same objective and direction, otherwise old
    and new results would be mixed silently; settings (budget, workers) may change and are
    recorded. The directory is private to its owner unless ``group_access`` is asked for: on a
    shared machine anyone who can write there could steer the search.
    """
    run_dir = Path(run_dir)
    mode = 0o750 if group_access else 0o700
    run_dir.mkdir(mode=mode, parents=True, exist_ok=True)
    (run_dir / SHARD_DIR).mkdir(mode=mode, exist_ok=True)
    (run_dir / LOG_DIR).mkdir(mode=mode, exist_ok=True)
    settings = dict(settings or {})
    if "workers" in settings:
        settings.setdefault("max_workers", settings["workers"])
    path = run_dir / RUN_FILE
    if not path.exists():
        info = RunInfo(uuid.uuid4().hex, space.to_json(), objective, direction, time.time(), settings)
        if _write_atomically(path, info, replace_existing=False):
            return info
    existing = read_run_info(run_dir)
    problems = _differences(existing, space, objective, direction)
    if problems:
        raise RunDirectoryError(
            f"refusing to reuse {run_dir}: " + "; ".join(problems)
            + ". Use a new --run-dir for a different search, or relaunch with the original settings"
            " to resume this one. Nothing in the directory was changed."
        )
    if settings:
        previous = existing.max_workers or 0
        existing.settings = {**settings, "max_workers": max(previous, int(settings.get("workers", 0)))}
        _write_atomically(path, existing, replace_existing=True)
    return existing
