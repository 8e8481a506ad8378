"""CANDLE Pilot1 Combo data: download, staged directories, a synthetic generator, and the loader.

The benchmark predicts the growth of an NCI-60 cancer cell line under a pair of drugs (NCI ALMANAC).
Five public files from the CANDLE FTP (``DATA_URL``) are needed; their names and formats are the
ones the original Keras benchmark reads (``Pilot1/Combo/NCI60.py`` in ECP-CANDLE/Benchmarks):

* ``ComboDrugGrowth_Nov2017.csv`` (comma-separated, NCI ALMANAC release): one row per well, with
  ``CELLNAME`` (ALMANAC cell name), ``NSC1``/``CONC1`` and ``NSC2``/``CONC2`` (drug and molar
  concentration; empty for single-drug wells), ``PERCENTGROWTH`` and ``VALID`` (``Y``/``N``);
* ``combined_rnaseq_data_lincs1000`` (tab-separated): ``Sample`` (``NCI60.<name>`` for NCI-60 cells,
  other prefixes for other collections) and one column per LINCS-1000 landmark gene;
* ``ALMANAC_drug_descriptors_dragon7.txt`` (tab-separated): ``NAME`` (``NSC.<number>``) and one column
  per Dragon7 descriptor, ``na`` for missing values;
* ``NCI60_CELLNAME_to_Combo.txt`` (tab-separated name map): ``Name`` (ALMANAC name) -> ``CELLNAME``;
* ``NCI60_CELLNAME_to_Combo.new.txt`` (tab-separated name map): ``NCI60.ID`` -> ``CELLNAME``.

The loader follows the original: keep valid wells, pair a single drug with itself, map cell names,
average replicate wells per (cell, drug1, drug2, conc1, conc2), take the minimum over the
concentration grid as the response (``GROWTH`` = percent growth / 100), keep NCI-60 expression
samples, drop all-empty feature columns, impute the rest with column means, and keep only the
(cell, drug, drug) rows whose cell and both drugs have features. What it keeps is small: a cell
matrix (cells x genes), a drug matrix (drugs x descriptors) and index rows (cell, drug1, drug2)
with their growth. Batches are gathered from these, so the design matrix (85,303 rows x 8,541
columns for the real data) is never built.

Parsing the 611 MB response file takes a while, so the parsed arrays are saved once as an ``.npz``
under the cache directory (keyed by the source files' sizes and times) and every worker process
loads that, once, and keeps it for all its evaluations (``get_dataset``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

DATA_URL = "http://ftp.mcs.anl.gov/pub/candle/public/benchmarks/Pilot1/combo/"

RESPONSE_FILE = "ComboDrugGrowth_Nov2017.csv"
EXPRESSION_FILE = "combined_rnaseq_data_lincs1000"
DESCRIPTOR_FILE = "ALMANAC_drug_descriptors_dragon7.txt"
CELLMAP_FILE = "NCI60_CELLNAME_to_Combo.txt"
CELLMAP_NEW_FILE = "NCI60_CELLNAME_to_Combo.new.txt"

#: The columns of the NCI ALMANAC release, in its order.
RESPONSE_COLUMNS = (
    "COMBODRUGSEQ", "SCREENER", "STUDY", "TESTDATE", "PLATE", "PANELNBR", "CELLNBR", "PREFIX1", "NSC1",
    "SAMPLE1", "CONCINDEX1", "CONC1", "CONCUNIT1", "PREFIX2", "NSC2", "SAMPLE2", "CONCINDEX2", "CONC2",
    "CONCUNIT2", "PERCENTGROWTH", "PERCENTGROWTHNOTZ", "TESTVALUE", "CONTROLVALUE", "TZVALUE",
    "EXPECTEDGROWTH", "SCORE", "VALID", "PANEL", "CELLNAME",
)
NA_VALUES = ["na", "-", ""]
SCALINGS = ("std", "minmax", "maxabs")
_FORMAT_VERSION = 1  # of the processed .npz cache; bump when parsing changes


class DataError(RuntimeError):
    """The data cannot be obtained or read; the message says why and what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of the public dataset. ``size``/``sha256`` are checked when known."""

    name: str
    what: str
    size: int | None = None
    sha256: str | None = None


#: The files ``--data download`` fetches. Sizes are those the CANDLE server reported in published
#: download logs; files without a known size are checked against the length the server declares.
MANIFEST: tuple[RemoteFile, ...] = (
    RemoteFile(RESPONSE_FILE, "NCI ALMANAC drug-pair growth (comma-separated)", 611_508_384),
    RemoteFile(EXPRESSION_FILE, "RNA-seq of LINCS-1000 landmark genes (tab-separated)"),
    RemoteFile(DESCRIPTOR_FILE, "Dragon7 descriptors of the ALMANAC drugs (tab-separated)"),
    RemoteFile(CELLMAP_FILE, "ALMANAC cell name -> NCI-60 CELLNAME (tab-separated)", 2_819),
    RemoteFile(CELLMAP_NEW_FILE, "NCI60.ID -> CELLNAME (tab-separated)"),
)
REQUIRED_FILES = tuple(f.name for f in MANIFEST)


# ----------------------------------------------------------------------------------------------
# Download
# ----------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$ADBO_CANDLE_CACHE``, else ``$XDG_CACHE_HOME/adbo/candle``, else ``~/.cache/adbo/candle``."""
    env = os.environ.get("ADBO_CANDLE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "adbo" / "candle"


def staging_instructions(target: str | os.PathLike, base_url: str = DATA_URL,
                         files: Sequence[RemoteFile] = MANIFEST) -> str:
    """How to put the files in place by hand (Polaris compute nodes have no internet access)."""
    names = " ".join(f.name for f in files)
    url = base_url if base_url.endswith("/") else base_url + "/"
    return (
        "To stage the CANDLE Combo files by hand, on a machine with internet access (a Polaris login "
        "node has it; compute nodes do not) run:\n"
        f"    mkdir -p {target} && cd {target}\n"
        f"    for f in {names}; do curl -fL -C - -O {url}$f; done\n"
        f"(or wget -c {url}FILE for each). Copy the directory to the machine that runs the search if it "
        "differs (scp -r, rsync or Globus), then pass --data DIRECTORY to workflows/candle_hpo.py "
        f"(or --data download --data-cache {target}, which then finds and checks the files). "
        "Without network or data, --data synthetic runs the same pipeline on generated files."
    )


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike, size: int | None = None, sha256: str | None = None) -> None:
    """Raise ``DataError`` unless ``path`` has the expected size and SHA-256 (where given)."""
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DataError(f"{path.name}: size is {actual:,} bytes, expected {size:,}; the file was refused")
    if sha256:
        digest = _sha256(path)
        if digest.lower() != sha256.lower():
            raise DataError(f"{path.name}: SHA-256 is {digest}, expected {sha256}; the file was refused")


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _transfer_errors() -> tuple[type[BaseException], ...]:
    return (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


def _unreachable(exc: BaseException) -> bool:
    """Errors that mean the server cannot be reached at all (offline, DNS, refused), not a cut transfer."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (ConnectionRefusedError, socket.gaierror)) or (
        isinstance(reason, OSError) and getattr(reason, "errno", None) in (101, 113)  # network/host unreachable
    )


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    retries: int = 5,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    backoff: float = 1.0,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range requests.

    A transfer cut off part-way (connection reset, timeout, a short body) is resumed from the bytes
    already on disk, up to ``retries`` times. The finished file must match ``size`` and ``sha256``
    when given, and the total the server declared; otherwise it is deleted and ``DataError`` raised
    (a corrupt file is never moved into place). An existing ``dest`` is checked and kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        verify_file(dest, size, sha256)
        return dest
    part = dest.with_name(dest.name + ".part")
    failures = 0
    total: int | None = None
    last_error = ""
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "adbo-candle/1 (+https://github.com/ECP-CANDLE/Benchmarks)"}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                if have and resp.status == 206:
                    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                    if not m or int(m.group(1)) != have:
                        raise DataError(f"{url}: the server answered a resume request with an unusable "
                                        f"Content-Range {resp.headers.get('Content-Range')!r}")
                    total = int(m.group(3)) if m.group(3) != "*" else None
                    mode = "ab"
                else:  # a full body: start over
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length is not None else None
                    mode, have = "wb", 0
                if size is not None and total is not None and total != size:
                    raise DataError(
                        f"{url}: the server offers {total:,} bytes, expected {size:,}; refusing the file "
                        "(if the upstream file changed, pass the new size or disable the manifest check)"
                    )
                with open(part, mode) as out:
                    done = have
                    while True:
                        block = resp.read(chunk_size)
                        if not block:
                            break
                        out.write(block)
                        done += len(block)
                        if progress is not None:
                            progress(dest.name, done, total)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send: the part is complete (or too long)
                total = total if total is not None else have
            elif exc.code >= 500 or exc.code == 429:
                failures += 1
                last_error = f"HTTP {exc.code} {exc.reason}"
                if failures > retries:
                    raise DataError(f"could not download {url}: {last_error}") from None
                time.sleep(backoff * failures)
                continue
            else:
                raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
        except _transfer_errors() as exc:
            failures += 1
            last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if _unreachable(exc) and not have:  # no route, no name, nobody listening: retrying will not help
                raise DataError(f"could not download {url}: {last_error}") from None
            if failures > retries:
                raise DataError(f"could not download {url} after {failures} attempts: {last_error}") from None
            time.sleep(backoff * failures)
            continue
        got = part.stat().st_size if part.exists() else 0
        if total is not None and got < total:  # the server closed early without an error: resume
            failures += 1
            last_error = f"transfer stopped at {got:,} of {total:,} bytes"
            if failures > retries:
                raise DataError(f"could not download {url} after {failures} attempts: {last_error}")
            time.sleep(backoff * failures)
            continue
        break
    try:
        verify_file(part, size if size is not None else total, sha256)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest


def download_combo_data(
    cache_dir: str | os.PathLike | None = None,
    *,
    base_url: str = DATA_URL,
    files: Sequence[RemoteFile] = MANIFEST,
    check_manifest: bool = True,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Path:
    """Make sure every Combo file is in ``cache_dir/raw`` (downloading what is missing); return it.

    With ``check_manifest=False`` only the server's declared length is checked. Any failure raises
    ``DataError`` with the reason and the steps to stage the files by hand.
    """
    target = Path(cache_dir or default_cache_dir()).expanduser() / "raw"
    url = base_url if base_url.endswith("/") else base_url + "/"
    for spec in files:
        try:
            download_file(url + spec.name, target / spec.name,
                          size=spec.size if check_manifest else None,
                          sha256=spec.sha256 if check_manifest else None,
                          retries=retries, timeout=timeout, backoff=backoff, progress=progress)
        except (DataError, OSError) as exc:
            raise DataError(f"{exc}\n\n{staging_instructions(target, base_url, files)}") from None
    return target


def check_staged(directory: str | os.PathLike, files: Iterable[str] = REQUIRED_FILES) -> Path:
    """``directory`` if it holds every required file, else ``DataError`` naming the missing ones."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist\n\n{staging_instructions(directory)}")
    missing = [n for n in files if not (directory / n).is_file()]
    if missing:
        raise DataError(f"data directory {directory} lacks {', '.join(missing)}\n\n{staging_instructions(directory)}")
    return directory


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------
def _norm_nsc(values: pd.Series) -> pd.Series:
    """NSC numbers as strings without a float tail ('740.0' -> '740')."""
    s = values.astype("string").str.strip()
    return s.str.replace(r"\.0+$", "", regex=True)


def _norm_cell(values: pd.Series) -> pd.Series:
    """CELLNAME as the original's expression loader writes it (':' -> '.'), on both sides of the join."""
    return values.astype("string").str.strip().str.replace(":", ".", regex=False)


def _strip_nsc_prefix(name: str) -> str:
    """Descriptor ``NAME`` 'NSC.740' (or 'NSC-740', 'NSC740') -> '740' (the original drops 4 characters)."""
    name = str(name).strip()
    m = re.match(r"^NSC[^0-9A-Za-z]?(.+)$", name, flags=re.IGNORECASE)
    return m.group(1) if m else name


def read_cell_map(path: str | os.PathLike, key: str) -> dict[str, str]:
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    for col in (key, "CELLNAME"):
        if col not in df.columns:
            raise DataError(f"{Path(path).name}: expected a column {col!r}, found {list(df.columns)}")
    df = df[(df[key] != "") & (df["CELLNAME"] != "")]
    return dict(zip(df[key].str.strip(), _norm_cell(df["CELLNAME"])))


def read_response(path: str | os.PathLike, cellmap_path: str | os.PathLike) -> pd.DataFrame:
    """(CELLNAME, NSC1, NSC2, GROWTH) per cell and drug pair, aggregated as the original does."""
    usecols = ["CELLNAME", "NSC1", "CONC1", "NSC2", "CONC2", "PERCENTGROWTH", "VALID"]
    try:
        df = pd.read_csv(path, usecols=usecols, na_values=NA_VALUES, keep_default_na=False, engine="c",
                         dtype={"CELLNAME": str, "NSC1": str, "NSC2": str, "VALID": str},
                         on_bad_lines="warn", low_memory=False)
    except ValueError as exc:
        raise DataError(f"{Path(path).name}: cannot read the ALMANAC columns {usecols}: {exc}") from None
    df = df[df["VALID"].astype("string").str.strip() == "Y"].copy()
    df["PERCENTGROWTH"] = pd.to_numeric(df["PERCENTGROWTH"], errors="coerce")
    for c in ("CONC1", "CONC2"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["NSC1"] = _norm_nsc(df["NSC1"])
    df["NSC2"] = _norm_nsc(df["NSC2"]).fillna(df["NSC1"])  # a single drug is paired with itself
    df["CONC2"] = df["CONC2"].fillna(df["CONC1"])
    df = df.dropna(subset=["NSC1", "PERCENTGROWTH", "CONC1"])
    cellmap = read_cell_map(cellmap_path, "Name")
    df["CELLNAME"] = df["CELLNAME"].astype("string").str.strip().map(cellmap)
    df = df.dropna(subset=["CELLNAME"])
    keys = ["CELLNAME", "NSC1", "NSC2"]
    grid = df.groupby(keys + ["CONC1", "CONC2"], sort=False)["PERCENTGROWTH"].mean()
    growth = grid.groupby(level=[0, 1, 2], sort=True).min().reset_index()
    growth = growth.rename(columns={"PERCENTGROWTH": "GROWTH"})
    growth["GROWTH"] = (growth["GROWTH"] / 100.0).astype(np.float32)
    growth["CELLNAME"] = growth["CELLNAME"].astype(str)
    growth["NSC1"] = growth["NSC1"].astype(str)
    growth["NSC2"] = growth["NSC2"].astype(str)
    return growth


def _numeric_matrix(df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Drop all-empty columns and impute the rest with column means (the original's Imputer)."""
    num = df.apply(pd.to_numeric, errors="coerce")
    num = num.dropna(axis=1, how="all")
    mat = np.array(num.to_numpy(dtype=np.float64), copy=True)
    means = np.nanmean(mat, axis=0) if mat.size else np.zeros(mat.shape[1])
    holes = np.isnan(mat)
    if holes.any():
        mat[holes] = np.take(means, np.nonzero(holes)[1])
    return mat.astype(np.float32), [str(c) for c in num.columns]


def read_expression(path: str | os.PathLike, cellmap_new_path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """NCI-60 RNA-seq rows as (CELLNAME list, imputed matrix, gene names)."""
    df = pd.read_csv(path, sep="\t", engine="c", na_values=NA_VALUES, keep_default_na=False, low_memory=False)
    if "Sample" not in df.columns:
        raise DataError(f"{Path(path).name}: expected a 'Sample' column, found {list(df.columns[:5])}...")
    df = df[df["Sample"].astype(str).str.startswith("NCI60")].reset_index(drop=True)
    cellmap = read_cell_map(cellmap_new_path, "NCI60.ID")
    names = df["Sample"].astype(str).str.strip().map(cellmap)
    keep = names.notna() & ~names.duplicated()
    df, names = df[keep].reset_index(drop=True), names[keep].reset_index(drop=True)
    mat, cols = _numeric_matrix(df.drop(columns=["Sample"]))
    return [str(n) for n in names], mat, cols


def read_descriptors(path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """Dragon7 descriptors as (NSC list, imputed matrix, descriptor names)."""
    df = pd.read_csv(path, sep="\t", engine="c", na_values=NA_VALUES, keep_default_na=False, low_memory=False)
    if "NAME" not in df.columns:
        raise DataError(f"{Path(path).name}: expected a 'NAME' column, found {list(df.columns[:5])}...")
    nsc = df["NAME"].map(_strip_nsc_prefix)
    keep = ~nsc.duplicated()
    df, nsc = df[keep].reset_index(drop=True), nsc[keep].reset_index(drop=True)
    mat, cols = _numeric_matrix(df.drop(columns=["NAME"]))
    return [str(n) for n in nsc], mat, cols


def scale_matrix(mat: np.ndarray, scaling: str | None) -> np.ndarray:
    """scikit-learn's StandardScaler / MinMaxScaler / MaxAbsScaler, fitted over the rows given.

    Constant columns keep a scale of 1 (as scikit-learn does), so nothing divides by zero.
    """
    x = mat.astype(np.float64)
    if scaling is None or scaling == "none":
        out = x
    elif scaling == "std":
        std = x.std(axis=0)
        out = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    elif scaling == "minmax":
        lo, hi = x.min(axis=0), x.max(axis=0)
        out = (x - lo) / np.where(hi > lo, hi - lo, 1.0)
    elif scaling == "maxabs":
        m = np.abs(x).max(axis=0)
        out = x / np.where(m > 0, m, 1.0)
    else:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of {SCALINGS}")
    return out.astype(np.float32)


@dataclass
class ComboDataset:
    """The parsed benchmark: entity matrices plus (cell, drug1, drug2) index rows and growth.

    ``cell_features``/``drug_features`` are imputed but unscaled; ``scaled(name)`` returns them
    scaled (cached), because ``scaling`` is a hyperparameter.
    """

    cell_names: list[str]
    cell_features: np.ndarray
    gene_names: list[str]
    drug_ids: list[str]
    drug_features: np.ndarray
    descriptor_names: list[str]
    rows: np.ndarray  # int32 [n, 3]: cell index, drug1 index, drug2 index
    growth: np.ndarray  # float32 [n]
    source: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    _scaled: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def n_genes(self) -> int:
        return int(self.cell_features.shape[1])

    @property
    def n_descriptors(self) -> int:
        return int(self.drug_features.shape[1])

    def scaled(self, scaling: str) -> tuple[np.ndarray, np.ndarray]:
        if scaling not in self._scaled:
            self._scaled[scaling] = (scale_matrix(self.cell_features, scaling),
                                     scale_matrix(self.drug_features, scaling))
        return self._scaled[scaling]

    def split(self, seed: int = 2017, valid: float = 0.2, test: float = 0.2,
              max_rows: int | None = None) -> dict[str, np.ndarray]:
        """Shuffled row indices for train / valid / test (the DeepHyper benchmark's 60/20/20).

        ``max_rows`` first keeps a seeded random subset of that many rows (demos, tests).
        """
        if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
            raise ValueError(f"valid ({valid}) and test ({test}) fractions must be in [0, 1) and sum below 1")
        perm = np.random.default_rng(seed).permutation(len(self))
        if max_rows is not None and max_rows < len(perm):
            perm = perm[:max_rows]
        n = len(perm)
        n_valid, n_test = int(n * valid), int(n * test)
        n_train = n - n_valid - n_test
        if n_train < 1 or (valid > 0 and n_valid < 1):
            raise DataError(f"only {n} rows: too few to split into train/valid/test ({valid}, {test})")
        return {"train": perm[:n_train], "valid": perm[n_train:n_train + n_valid],
                "test": perm[n_train + n_valid:]}

    def summary(self) -> dict[str, Any]:
        return {"rows": len(self), "cells": len(self.cell_names), "drugs": len(self.drug_ids),
                "genes": self.n_genes, "descriptors": self.n_descriptors,
                "growth_mean": float(self.growth.mean()) if len(self) else float("nan"),
                "growth_std": float(self.growth.std()) if len(self) else float("nan"), **self.stats}


def build_dataset(directory: str | os.PathLike) -> ComboDataset:
    """Parse the five files in ``directory`` and join them into a ``ComboDataset``."""
    d = check_staged(directory)
    response = read_response(d / RESPONSE_FILE, d / CELLMAP_FILE)
    cells, cell_mat, genes = read_expression(d / EXPRESSION_FILE, d / CELLMAP_NEW_FILE)
    drugs, drug_mat, descriptors = read_descriptors(d / DESCRIPTOR_FILE)
    cell_index = {c: i for i, c in enumerate(cells)}
    drug_index = {n: i for i, n in enumerate(drugs)}
    ci = response["CELLNAME"].map(cell_index)
    d1 = response["NSC1"].map(drug_index)
    d2 = response["NSC2"].map(drug_index)
    ok = ci.notna() & d1.notna() & d2.notna()
    stats = {
        "response_pairs": int(len(response)),
        "dropped_no_cell_features": int(ci.isna().sum()),
        "dropped_no_drug_features": int((ci.notna() & ~(d1.notna() & d2.notna())).sum()),
    }
    rows = np.stack([ci[ok].to_numpy(), d1[ok].to_numpy(), d2[ok].to_numpy()], axis=1).astype(np.int32)
    growth = response.loc[ok, "GROWTH"].to_numpy(dtype=np.float32)
    if len(rows) == 0:
        raise DataError(f"no (cell, drug, drug) row of {RESPONSE_FILE} in {d} has both cell and drug "
                        "features: check that the name maps match the response and expression files")
    return ComboDataset(cells, cell_mat, genes, drugs, drug_mat, descriptors, rows, growth,
                        source=str(d), stats=stats)


# ----------------------------------------------------------------------------------------------
# Processed cache and per-process reuse
# ----------------------------------------------------------------------------------------------
def _source_key(directory: Path) -> str:
    parts: list[Any] = [_FORMAT_VERSION, str(directory.resolve())]
    for name in REQUIRED_FILES:
        st = (directory / name).stat()
        parts.append([name, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def save_dataset(ds: ComboDataset, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        np.savez(f, cell_features=ds.cell_features, drug_features=ds.drug_features, rows=ds.rows,
                 growth=ds.growth, cell_names=np.array(ds.cell_names, dtype=str),
                 gene_names=np.array(ds.gene_names, dtype=str), drug_ids=np.array(ds.drug_ids, dtype=str),
                 descriptor_names=np.array(ds.descriptor_names, dtype=str),
                 meta=np.array(json.dumps({"source": ds.source, "stats": ds.stats})))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_saved_dataset(path: Path) -> ComboDataset:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return ComboDataset(
            [str(s) for s in z["cell_names"]], z["cell_features"], [str(s) for s in z["gene_names"]],
            [str(s) for s in z["drug_ids"]], z["drug_features"], [str(s) for s in z["descriptor_names"]],
            z["rows"], z["growth"], source=meta["source"], stats=meta["stats"],
        )


def processed_path(directory: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    directory = Path(directory).expanduser()
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / "processed" / f"combo-{_source_key(directory)}.npz"


def load_dataset(directory: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 use_cache: bool = True) -> ComboDataset:
    """Parse ``directory`` or reuse its processed ``.npz`` in ``cache_dir/processed`` (written on first parse)."""
    directory = check_staged(directory)
    if not use_cache:
        return build_dataset(directory)
    path = processed_path(directory, cache_dir)
    if path.exists():
        try:
            return read_saved_dataset(path)
        except (OSError, ValueError, KeyError):
            pass  # unreadable: rebuild it below
    ds = build_dataset(directory)
    try:
        save_dataset(ds, path)
    except OSError:
        pass  # a read-only cache only costs the next process a parse
    return ds


_PROCESS_CACHE: dict[tuple[str, str], ComboDataset] = {}
_PROCESS_LOCK = threading.Lock()


def get_dataset(directory: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ComboDataset:
    """``load_dataset`` once per process: every later evaluation in this worker reuses the arrays."""
    key = (str(Path(directory).expanduser().resolve()), str(cache_dir or ""))
    with _PROCESS_LOCK:  # thread workers share the process: load once, not once per thread
        ds = _PROCESS_CACHE.get(key)
        if ds is None:
            ds = load_dataset(directory, cache_dir)
            _PROCESS_CACHE[key] = ds
        return ds


# ----------------------------------------------------------------------------------------------
# Synthetic data in the real formats
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes of a generated dataset. ``pairs_per_cell`` drug pairs are screened on each cell."""

    n_cells: int = 60
    n_drugs: int = 50
    n_genes: int = 200
    n_descriptors: int = 400
    pairs_per_cell: int = 100
    conc_levels: int = 3
    latent_dim: int = 8
    noise: float = 4.0  # percent-growth noise per well

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: ``full`` has about the real dataset's sizes: 60 cells, about 85,000 (cell, drug, drug) rows after
#: filtering (pairs plus single drugs paired with themselves), 923 genes and 3,809 descriptors.
SYNTHETIC_PRESETS: dict[str, SyntheticSpec] = {
    "tiny": SyntheticSpec(n_cells=12, n_drugs=16, n_genes=24, n_descriptors=40, pairs_per_cell=40),
    "small": SyntheticSpec(n_cells=24, n_drugs=24, n_genes=64, n_descriptors=128, pairs_per_cell=80),
    "demo": SyntheticSpec(n_cells=60, n_drugs=40, n_genes=200, n_descriptors=400, pairs_per_cell=60),
    "full": SyntheticSpec(n_cells=60, n_drugs=104, n_genes=923, n_descriptors=3809, pairs_per_cell=1330),
}

_PANELS = [("BR", "Breast Cancer"), ("CNS", "CNS Cancer"), ("CO", "Colon Cancer"), ("LC", "Non-Small Cell Lung Cancer"),
           ("LE", "Leukemia"), ("ME", "Melanoma"), ("OV", "Ovarian Cancer"), ("PR", "Prostate Cancer"),
           ("RE", "Renal Cancer")]


class _World:
    """Latent cells and drugs; features are noisy functions of the latents, growth follows a Hill/Bliss model."""

    def __init__(self, spec: SyntheticSpec, seed: int):
        rng = np.random.default_rng([seed, 20171121])
        k = spec.latent_dim
        self.spec = spec
        self.zc = rng.standard_normal((spec.n_cells, k))
        self.zd = rng.standard_normal((spec.n_drugs, k))
        a = rng.standard_normal((k, spec.n_genes)) / math.sqrt(k)
        b = rng.standard_normal((k, spec.n_descriptors)) / math.sqrt(k)
        # log-scale RNA-seq-like values and descriptor-like values of various magnitudes
        self.expression = 4.0 + np.tanh(self.zc @ a) * 2.0 + 0.15 * rng.standard_normal((spec.n_cells, spec.n_genes))
        mags = 10.0 ** rng.uniform(-1, 3, spec.n_descriptors)
        self.descriptors = (self.zd @ b + 0.1 * rng.standard_normal((spec.n_drugs, spec.n_descriptors))) * mags
        self.w = rng.standard_normal((k, k)) / k
        self.v = rng.standard_normal(k) / math.sqrt(k)
        self.u = rng.standard_normal(k) / math.sqrt(k)
        self.syn = rng.standard_normal(k) / math.sqrt(k)

    def log_ic50(self, c: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Potency of drug d on cell c (log10 molar): a drug effect, a cell effect and an interaction."""
        inter = np.einsum("ij,jk,ik->i", self.zc[c], self.w, self.zd[d])
        return -6.0 - 0.8 * (self.zd[d] @ self.v) - 0.5 * (self.zc[c] @ self.u) - 1.2 * np.tanh(inter)

    def growth(self, c, d1, conc1, d2=None, conc2=None) -> np.ndarray:
        """Percent growth for single drugs (d2 None) or pairs: Bliss independence plus a synergy term."""
        e1 = 1.0 / (1.0 + 10.0 ** (self.log_ic50(c, d1) - np.log10(conc1)))
        if d2 is None:
            e = e1
        else:
            e2 = 1.0 / (1.0 + 10.0 ** (self.log_ic50(c, d2) - np.log10(conc2)))
            gamma = 0.4 * np.tanh(np.sum(self.zc[c] * self.syn * self.zd[d1] * self.zd[d2], axis=1))
            e = np.clip(1.0 - (1.0 - e1) * (1.0 - e2) + gamma * e1 * e2, 0.0, 1.0)
        return 100.0 - 170.0 * e


def _cell_names(n: int) -> list[tuple[str, str, str]]:
    """(ALMANAC Name, CELLNAME, panel) with dashes and colons like the real ones ('BR:SYN-MCF3')."""
    out = []
    for i in range(n):
        code, panel = _PANELS[i % len(_PANELS)]
        out.append((f"SYN-{code}{i:02d}", f"{code}:SYN-{code}{i:02d}", panel))
    return out


def synthetic_dataset(spec: SyntheticSpec | str = "full", seed: int = 0, n_rows: int | None = None) -> ComboDataset:
    """The generator's world as an in-memory ``ComboDataset``, without writing files.

    For benchmarks of the training loop at the real sizes (``benchmarks/gpu_epoch.py``); the
    tests and the workflow use ``write_synthetic_combo`` so that the real parser is exercised.
    """
    spec = SYNTHETIC_PRESETS[spec] if isinstance(spec, str) else spec
    world = _World(spec, seed)
    rng = np.random.default_rng([seed, 7])
    n = n_rows or spec.n_cells * spec.pairs_per_cell
    c = rng.integers(0, spec.n_cells, n)
    d1 = rng.integers(0, spec.n_drugs, n)
    d2 = (d1 + rng.integers(1, spec.n_drugs, n)) % spec.n_drugs
    top = np.full(n, 10.0 ** -5.5)
    g = world.growth(c, d1, top, d2, top) + spec.noise * rng.standard_normal(n)
    mat, _ = _numeric_matrix(pd.DataFrame(world.descriptors))
    return ComboDataset(
        [n for _, n, _ in _cell_names(spec.n_cells)], world.expression.astype(np.float32),
        [f"GENE{j}" for j in range(spec.n_genes)], [str(700000 + 13 * i) for i in range(spec.n_drugs)],
        mat, [f"D7.{j}" for j in range(spec.n_descriptors)], np.stack([c, d1, d2], 1).astype(np.int32),
        (g / 100.0).astype(np.float32), source=f"synthetic-in-memory(seed={seed})",
    )


def write_synthetic_combo(directory: str | os.PathLike, spec: SyntheticSpec | str = "demo", seed: int = 0,
                          overwrite: bool = False) -> Path:
    """Write the five Combo files, in the real formats and names, for a seeded synthetic world.

    Besides learnable structure, the files carry what the loader must filter: wells marked
    ``VALID=N``, single-drug wells, a cell without expression, a drug without descriptors,
    non-NCI-60 expression samples, ``na`` entries and an all-empty descriptor column. Writing is
    skipped when ``directory`` already holds the same generation (``SYNTHETIC.json``).
    """
    spec = SYNTHETIC_PRESETS[spec] if isinstance(spec, str) else spec
    directory = Path(directory).expanduser()
    stamp = directory / "SYNTHETIC.json"
    recipe = {"generator": 1, "seed": seed, **spec.to_dict()}
    if not overwrite and stamp.exists() and all((directory / n).exists() for n in REQUIRED_FILES):
        try:
            if json.loads(stamp.read_text()) == recipe:
                return directory
        except (OSError, ValueError):
            pass
    directory.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    world = _World(spec, seed)
    rng = np.random.default_rng([seed, 11])
    names = _cell_names(spec.n_cells + 1)  # the last cell is screened but has no expression
    nsc = [700000 + 13 * i for i in range(spec.n_drugs + 1)]  # the last drug has no descriptors

    # -- name maps (the .new map lists NCI60.ID; the old one the ALMANAC names) ----------------
    cellmap = pd.DataFrame({"Name": [a for a, _, _ in names], "CELLNAME": [b for _, b, _ in names],
                            "NCI60.ID": [f"NCI60.{a}" for a, _, _ in names]})
    cellmap.to_csv(directory / CELLMAP_FILE, sep="\t", index=False)
    cellmap[["NCI60.ID", "CELLNAME", "Name"]].iloc[::-1].to_csv(directory / CELLMAP_NEW_FILE, sep="\t", index=False)

    # -- expression: NCI-60 samples (all but the last cell) plus other collections --------------
    genes = [f"GENE{j}" for j in range(spec.n_genes)]
    expr = pd.DataFrame(world.expression.round(4), columns=genes)
    expr.insert(0, "Sample", [f"NCI60.{a}" for a, _, _ in names[:spec.n_cells]])
    other = pd.DataFrame(rng.normal(4.0, 1.0, (3, spec.n_genes)).round(4), columns=genes)
    other.insert(0, "Sample", ["CCLE.SYN1", "GDSC.SYN2", "NCIPDM.SYN3"])
    pd.concat([other.iloc[:2], expr, other.iloc[2:]]).to_csv(directory / EXPRESSION_FILE, sep="\t", index=False)

    # -- descriptors: NAME = NSC.<n>, 'na' holes, one all-empty column ---------------------------
    cols = [f"D7.{j}" for j in range(spec.n_descriptors)]
    desc = pd.DataFrame(world.descriptors, columns=cols).round(4).astype(object)
    holes = rng.random(desc.shape) < 0.01
    desc = desc.mask(holes, "na")
    desc.insert(spec.n_descriptors // 2, "D7.empty", "na")
    desc.insert(0, "NAME", [f"NSC.{n}" for n in nsc[:spec.n_drugs]])
    desc.to_csv(directory / DESCRIPTOR_FILE, sep="\t", index=False)

    # -- response: a concentration grid per (cell, pair) plus single-drug wells ----------------
    n_cells_screened = spec.n_cells + 1
    n_drugs_screened = spec.n_drugs + 1
    all_pairs = np.array([(i, j) for i in range(n_drugs_screened) for j in range(i + 1, n_drugs_screened)])
    concs = 10.0 ** np.linspace(-8.0, -5.5, spec.conc_levels)
    frames = []
    seq = 0
    for c in range(n_cells_screened):
        k = min(spec.pairs_per_cell, len(all_pairs))
        pairs = all_pairs[rng.choice(len(all_pairs), k, replace=False)]
        ci1, ci2 = np.meshgrid(np.arange(spec.conc_levels), np.arange(spec.conc_levels), indexing="ij")
        ci1, ci2 = ci1.ravel(), ci2.ravel()
        p1 = np.repeat(pairs[:, 0], len(ci1))
        p2 = np.repeat(pairs[:, 1], len(ci1))
        k1 = np.tile(ci1, len(pairs))
        k2 = np.tile(ci2, len(pairs))
        singles = np.unique(pairs.ravel())
        s1 = np.repeat(singles, spec.conc_levels)
        sk = np.tile(np.arange(spec.conc_levels), len(singles))
        cw = min(c, spec.n_cells - 1)  # the unscreened-expression cell behaves like a neighbour
        d1 = np.concatenate([p1, s1])
        d2 = np.concatenate([p2, np.full(len(s1), -1)])
        kk1 = np.concatenate([k1, sk])
        kk2 = np.concatenate([k2, np.full(len(s1), -1)])
        w1 = np.minimum(d1, spec.n_drugs - 1)
        w2 = np.minimum(np.where(d2 < 0, 0, d2), spec.n_drugs - 1)
        cc = np.full(len(d1), cw)
        g_pair = world.growth(cc, w1, concs[kk1], w2, concs[np.where(kk2 < 0, 0, kk2)])
        g_single = world.growth(cc, w1, concs[kk1])
        g = np.where(d2 < 0, g_single, g_pair) + spec.noise * rng.standard_normal(len(d1))
        valid = np.where(rng.random(len(d1)) < 0.02, "N", "Y")
        g = np.where(valid == "N", g - 500.0, g)  # invalid wells are absurd: the loader must drop them
        reps = 1 + (rng.random(len(d1)) < 0.1)  # some wells are replicated (averaged by the loader)
        idx = np.repeat(np.arange(len(d1)), reps)
        g = g[idx] + spec.noise * 0.5 * rng.standard_normal(len(idx))
        n = len(idx)
        name, cellname, panel = names[c]
        is_pair = d2[idx] >= 0
        screener = rng.choice(["FF", "1A", "FG"], n)
        frame = pd.DataFrame({
            "COMBODRUGSEQ": np.arange(seq + 1, seq + n + 1),
            "SCREENER": screener,
            "STUDY": [f"{s}{1000 + c}" for s in screener],
            "TESTDATE": "11/21/2014",
            "PLATE": [f"{c:03d}{p:04d}" for p in idx // 9],
            "PANELNBR": 1 + (c % len(_PANELS)),
            "CELLNBR": c + 1,
            "PREFIX1": "S",
            "NSC1": [nsc[i] for i in d1[idx]],
            "SAMPLE1": [nsc[i] + 5 for i in d1[idx]],
            "CONCINDEX1": kk1[idx] + 1,
            "CONC1": concs[kk1[idx]],
            "CONCUNIT1": "M",
            "PREFIX2": np.where(is_pair, "S", ""),
            "NSC2": [str(nsc[j]) if j >= 0 else "" for j in d2[idx]],
            "SAMPLE2": [str(nsc[j] + 5) if j >= 0 else "" for j in d2[idx]],
            "CONCINDEX2": np.where(is_pair, kk2[idx] + 1, 0),
            "CONC2": [f"{concs[k]:.2E}" if k >= 0 else "" for k in kk2[idx]],
            "CONCUNIT2": np.where(is_pair, "M", ""),
            "PERCENTGROWTH": np.round(g, 3),
            "PERCENTGROWTHNOTZ": np.round(np.maximum(g, 0.0) + 1.0, 3),
            "TESTVALUE": np.round(1.0 + np.maximum(g, -99) / 100.0, 4),
            "CONTROLVALUE": 2.0,
            "TZVALUE": 0.3,
            "EXPECTEDGROWTH": np.where(is_pair, np.round(g + 3.0, 3).astype(str), ""),
            "SCORE": np.where(is_pair, np.round(rng.normal(0, 20, n), 2).astype(str), ""),
            "VALID": valid[idx],
            "PANEL": panel,
            "CELLNAME": name,
        })
        frame["CONC1"] = [f"{v:.2E}" for v in frame["CONC1"]]
        frames.append(frame)
        seq += n
    response = pd.concat(frames, ignore_index=True)[list(RESPONSE_COLUMNS)]
    response.to_csv(directory / RESPONSE_FILE, index=False)
    stamp.write_text(json.dumps(recipe, indent=1))
    return directory


# ----------------------------------------------------------------------------------------------
# One entry point for the workflow
# ----------------------------------------------------------------------------------------------
def resolve_data(
    data: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    synthetic_size: str = "demo",
    seed: int = 0,
    base_url: str = DATA_URL,
    check_manifest: bool = True,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> tuple[Path, str]:
    """``download`` | ``synthetic`` | a directory -> (directory holding the five files, a stable label)."""
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if data == "download":
        return download_combo_data(cache, base_url=base_url, check_manifest=check_manifest,
                                   progress=progress), "candle-public"
    if data == "synthetic":
        if synthetic_size not in SYNTHETIC_PRESETS:
            raise DataError(f"unknown synthetic size {synthetic_size!r}; choose one of {sorted(SYNTHETIC_PRESETS)}")
        target = cache / "synthetic" / f"{synthetic_size}-seed{seed}"
        return write_synthetic_combo(target, synthetic_size, seed=seed), f"synthetic-{synthetic_size}-seed{seed}"
    path = Path(data).expanduser()
    return check_staged(path), f"staged:{path.resolve()}"


def copy_staged(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the five files (only) from ``src`` to ``dst``; a helper for staging by hand."""
    src, dst = check_staged(src), Path(dst).expanduser()
    dst.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED_FILES:
        shutil.copy2(src / name, dst / name)
    return dst
