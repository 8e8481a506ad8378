"""``run.json``: the identity of a run (what is searched, how it is scored), fixed at creation."""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
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


class RunDirectoryWarning(UserWarning):
    """The run directory works, but is unsafe as it is (for instance writable by every user)."""


DAMAGED = "it is damaged or was not written by adbo: restore it from a backup, or use a new run directory"


def dir_mode(group_access: bool) -> int:
    """The mode of every directory adbo creates: the group may read and list only if asked for."""
    return 0o750 if group_access else 0o700


def file_mode(directory_mode: int) -> int:
    """The mode of the files in a directory of ``directory_mode``: the same readers, no one executes."""
    return directory_mode & 0o640


def make_dir(path: Path, mode: int, parents: bool = False) -> bool:
    """Create ``path`` with exactly ``mode``; leave an existing directory as it is.

    ``mkdir``'s mode is cut by the umask (077 would take away the group access asked for), so
    the mode is set again after creating. Something else holding the name (a file where a
    directory should be) is never removed: it is reported with what to do. Returns whether the
    directory was created.
    """
    try:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)  # the user's directories: their usual mode
        path.mkdir(mode=mode)
    except (FileExistsError, NotADirectoryError):
        if path.is_dir():
            return False
        blocker = path if os.path.lexists(path) else next(
            (p for p in path.parents if os.path.lexists(p) and not p.is_dir()), path.parent)
        raise RunDirectoryError(
            f"cannot create the directory {path}: {blocker} is a file, not a directory "
            "(adbo never removes what it did not write); remove or rename that file, then relaunch"
        ) from None
    except OSError as exc:
        raise RunDirectoryError(f"cannot create the directory {path} ({exc.strerror or exc}); "
                                "check the permissions and free space there") from None
    os.chmod(path, mode)
    return True


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

        try:
            return SearchSpace.from_json(self.space_json)
        except Exception as exc:  # noqa: BLE001 - ConfigSpace raises anything on a garbage dict
            raise RunDirectoryError(
                f"the search space in {RUN_FILE} cannot be read ({type(exc).__name__}: {exc}); {DAMAGED}"
            ) from None

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


def _problem(data: Any) -> str | None:
    """What makes a parsed ``run.json`` unusable, in a few words; None if it looks like adbo's.

    Checked when reading, so that a damaged file is one clear error, not a traceback from
    whichever process first touches the bad field. The space is only checked for its shape:
    decoding it imports ConfigSpace, which processes that only move rows do without.
    """
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    for key in ("run_id", "space", "objective", "direction", "created"):
        if key not in data:
            return f"lacks '{key}'"
    version = data.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        return f"has a format_version of {version!r}, not a number"
    if not isinstance(data["run_id"], str) or not data["run_id"]:
        return f"has a run_id of {data['run_id']!r}, not a name"
    if not isinstance(data["objective"], str):
        return f"has an objective of {data['objective']!r}, not a name"
    if data["direction"] not in ("maximize", "minimize"):
        return f"has a direction of {data['direction']!r}, not 'maximize' or 'minimize'"
    if isinstance(data["created"], bool) or not isinstance(data["created"], (int, float)):
        return f"has a creation time of {data['created']!r}, not a number"
    space = data["space"]
    hyperparameters = space.get("hyperparameters") if isinstance(space, dict) else None
    if not isinstance(hyperparameters, list) or not hyperparameters or not all(
        isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("type"), str)
        for h in hyperparameters
    ):
        shown = repr(space)
        return f"has a space that is not a search space ({shown[:60] + '...' if len(shown) > 60 else shown})"
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        return f"has settings of {settings!r}, not an object"
    for key in ("max_workers", "workers"):
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"has a settings.{key} of {value!r}, not a number"
    return None


def read_run_info(run_dir: str | os.PathLike) -> RunInfo:
    """The run's identity, or a one-line ``RunDirectoryError`` saying what is wrong and what to do."""
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirectoryError(
            f"{run_dir} is not an adbo run directory (no {RUN_FILE}); start a search there first"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise RunDirectoryError(f"{path} is not valid JSON ({reason}); {DAMAGED}") from None
    except OSError as exc:
        raise RunDirectoryError(f"cannot read {path} ({exc.strerror or exc}); it must be a file you may read") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise RunDirectoryError(
            f"{path} has format version {data['format_version']}, newer than this adbo "
            f"({FORMAT_VERSION}); upgrade adbo to read it"
        )
    problem = _problem(data)
    if problem is not None:
        raise RunDirectoryError(f"{path} {problem}; {DAMAGED}")
    return RunInfo.from_dict(data)


def _write_atomically(path: Path, info: RunInfo, replace_existing: bool, mode: int = 0o600) -> bool:
    """Publish ``run.json`` whole or not at all; a failed write (disk full) leaves no temporary file.

    The file gets exactly ``mode`` whatever the umask, so that a group given access can read it.
    """
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    data = json.dumps(info.to_dict(), indent=2, sort_keys=True).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace_existing:
            os.replace(tmp, path)
            return True
        os.link(tmp, path)  # fails if another launcher won the race: then we validate theirs
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise RunDirectoryError(
            f"cannot write {path} ({exc.strerror or exc}); free some space or fix the permissions there, "
            "then relaunch. " + (f"The previous {RUN_FILE} is unchanged." if replace_existing else "No run was created.")
        ) from None
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


def _holds_files(directory: Path) -> bool:
    """Whether anything but empty directories lies under ``directory`` (stops at the first file)."""
    if not directory.is_dir():
        return os.path.lexists(directory)
    for _, dirs, files in os.walk(directory):
        if files:
            return True
    return False


def _warn_if_world_writable(run_dir: Path) -> None:
    """Anyone who can write the run directory can plant or delete results: say so, and how to fix it."""
    if os.stat(run_dir).st_mode & 0o002:
        warnings.warn(
            f"adbo: the run directory {run_dir} is writable by every user, who could plant or remove results; "
            f"run 'chmod o-w {run_dir}'",
            RunDirectoryWarning,
            stacklevel=3,
        )


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
    shared machine anyone who can write there could steer the search. The choice is recorded as
    ``settings["group_access"]``, so that the directories workers create later get the same mode.

    Results without a readable ``run.json`` (deleted, damaged, or shards copied without it) are
    refused before anything is created: starting over would mix a new search into them.
    """
    run_dir = Path(run_dir)
    mode = dir_mode(group_access)
    given = dict(settings or {})
    if "workers" in given:
        given.setdefault("max_workers", given["workers"])
    path = run_dir / RUN_FILE
    if run_dir.is_dir():
        _warn_if_world_writable(run_dir)
    else:
        make_dir(run_dir, mode, parents=True)
    if not os.path.lexists(path):
        shards = run_dir / SHARD_DIR
        if _holds_files(shards) and not os.path.lexists(path):  # (re-checked: a launcher racing us may have made it)
            raise RunDirectoryError(
                f"{run_dir} holds results in {shards} but no {RUN_FILE} (deleted, or the shards were copied "
                f"without it); refusing to start a new search over them. Restore {RUN_FILE} from a backup or "
                "from the run the shards came from to resume it, or use a new run directory. Nothing was changed."
            )
        info = RunInfo(uuid.uuid4().hex, space.to_json(), objective, direction, time.time(),
                       {**given, "group_access": bool(group_access)})
        if _write_atomically(path, info, replace_existing=False, mode=file_mode(mode)):
            _make_subdirs(run_dir, mode)
            return info
    existing = read_run_info(run_dir)
    problems = _differences(existing, space, objective, direction)
    if problems:
        raise RunDirectoryError(
            f"refusing to reuse {run_dir}: " + "; ".join(problems)
            + ". Use a new --run-dir for a different search, or relaunch with the original settings"
            " to resume this one. Nothing in the directory was changed."
        )
    if given or existing.settings.get("group_access") != bool(group_access):
        previous = existing.max_workers or 0
        base = given if given else existing.settings
        existing.settings = {**base, "group_access": bool(group_access),
                             "max_workers": max(previous, int(given.get("workers", 0)))}
        _write_atomically(path, existing, replace_existing=True, mode=file_mode(mode))
    _make_subdirs(run_dir, mode)
    return existing


def _make_subdirs(run_dir: Path, mode: int) -> None:
    make_dir(run_dir / SHARD_DIR, mode)
    make_dir(run_dir / LOG_DIR, mode)


JOIN_DIR = "joins"


def _joined_ranges(run_dir: Path) -> list[tuple[int, int]]:
    """Worker id ranges (start, count) reserved by joining launches: ``joins/ids-START`` holding COUNT."""
    ranges = []
    try:
        entries = list(os.scandir(run_dir / JOIN_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return ranges
    for entry in entries:
        parts = entry.name.split("-")
        if len(parts) != 2 or parts[0] != "ids" or not parts[1].isdigit():
            continue
        try:
            count = int(Path(entry.path).read_text().strip() or 0)
        except (OSError, ValueError):
            count = 0
        # A reservation caught between its creation and its count covers at least its start.
        ranges.append((int(parts[1]), max(1, count)))
    return ranges


def current_max_workers(run_dir: str | os.PathLike, info: RunInfo | None = None) -> int | None:
    """The number of worker ids in use: the largest launch's, or the end of the last joined range."""
    run_dir = Path(run_dir)
    info = info or read_run_info(run_dir)
    ends = [start + count for start, count in _joined_ranges(run_dir)]
    known = [v for v in (info.max_workers, *ends) if v is not None]
    return max(known) if known else None


def reserve_worker_ids(run_dir: str | os.PathLike, count: int, mode: int = 0o700) -> int:
    """Reserve ``count`` worker ids that no other launch uses (for ``join``); returns the first.

    Each reservation is a file created with ``O_EXCL``, so two launches joining at once never get
    the same ids; run.json itself is not rewritten (its settings stay the holder's).
    """
    run_dir = Path(run_dir)
    make_dir(run_dir / JOIN_DIR, mode)
    for _ in range(1000):
        start = current_max_workers(run_dir) or 0
        try:  # the name holds only the start, so two launches can never both reserve it
            fd = os.open(run_dir / JOIN_DIR / f"ids-{start:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            os.write(fd, f"{count}\n".encode())
        finally:
            os.close(fd)
        # Another launch that read the old maximum may have reserved a range reaching past our
        # start between our reading and our creating: then ours overlaps it, so take the next one.
        if any(s < start < s + c for s, c in _joined_ranges(run_dir) if s != start):
            continue
        return start
    raise RunDirectoryError(f"could not reserve {count} worker ids in {run_dir / JOIN_DIR}; too many launches joining")
