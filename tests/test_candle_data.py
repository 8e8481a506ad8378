"""CANDLE Combo data: real files on disk in the real formats, the real parser, and downloads from a
real HTTP server on 127.0.0.1 (resume after a cut, size and checksum refusal, no server)."""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict

import numpy as np
import pytest

from adbo.objectives import candle_data as cd
from candle_helpers import FileServer, free_port


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return cd.write_synthetic_combo(tmp_path_factory.mktemp("tiny"), "tiny", seed=3)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


# -- formats ---------------------------------------------------------------------------------
def test_generated_files_have_the_real_names_columns_and_separators(tiny_dir):
    assert sorted(p.name for p in tiny_dir.iterdir() if p.name in cd.REQUIRED_FILES) == sorted(cd.REQUIRED_FILES)
    with open(tiny_dir / cd.RESPONSE_FILE) as f:
        header = f.readline().rstrip("\n")
        first = f.readline()
    assert header.split(",") == list(cd.RESPONSE_COLUMNS)  # comma-separated ALMANAC release
    assert "\t" not in header and len(first.split(",")) == len(cd.RESPONSE_COLUMNS)
    for name, first_col in [(cd.EXPRESSION_FILE, "Sample"), (cd.DESCRIPTOR_FILE, "NAME")]:
        head = (tiny_dir / name).read_text().splitlines()[:2]
        assert head[0].split("\t")[0] == first_col and "," not in head[0]
        assert len(head[1].split("\t")) == len(head[0].split("\t"))
    assert (tiny_dir / cd.DESCRIPTOR_FILE).read_text().splitlines()[1].startswith("NSC.")
    for name in (cd.CELLMAP_FILE, cd.CELLMAP_NEW_FILE):
        cols = (tiny_dir / name).read_text().splitlines()[0].split("\t")
        assert {"Name", "CELLNAME", "NCI60.ID"} <= set(cols)
    # single-drug wells leave NSC2/CONC2 empty, as in the release
    rows = list(csv.DictReader(open(tiny_dir / cd.RESPONSE_FILE)))
    assert any(r["NSC2"] == "" and r["CONC2"] == "" and r["CONCINDEX2"] == "0" for r in rows)
    assert {r["VALID"] for r in rows} == {"Y", "N"}


def _reference_growth(directory):
    """The original's aggregation recomputed with the csv module, independently of pandas."""
    names = {r["Name"]: r["CELLNAME"].replace(":", ".")
             for r in csv.DictReader(open(directory / cd.CELLMAP_FILE), delimiter="\t")}
    wells = defaultdict(list)
    for r in csv.DictReader(open(directory / cd.RESPONSE_FILE)):
        if r["VALID"] != "Y":
            continue
        nsc2 = r["NSC2"] or r["NSC1"]
        conc2 = r["CONC2"] or r["CONC1"]
        wells[(names[r["CELLNAME"]], r["NSC1"], nsc2, float(r["CONC1"]), float(conc2))].append(float(r["PERCENTGROWTH"]))
    best = {}
    for (cell, d1, d2, _, _), values in wells.items():
        mean = sum(values) / len(values)
        best[(cell, d1, d2)] = min(best.get((cell, d1, d2), float("inf")), mean)
    return {k: v / 100.0 for k, v in best.items()}


def test_loader_aggregates_and_filters_like_the_original(tiny_dir):
    spec = cd.SYNTHETIC_PRESETS["tiny"]
    ds = cd.build_dataset(tiny_dir)
    # filtering: non-NCI-60 samples, the cell without expression, the drug without descriptors
    assert len(ds.cell_names) == spec.n_cells and all("." in c and ":" not in c for c in ds.cell_names)
    assert len(ds.drug_ids) == spec.n_drugs and all(d.isdigit() for d in ds.drug_ids)
    assert ds.stats["dropped_no_cell_features"] > 0 and ds.stats["dropped_no_drug_features"] > 0
    # the all-empty descriptor column is dropped, 'na' holes are imputed
    assert ds.n_descriptors == spec.n_descriptors and "D7.empty" not in ds.descriptor_names
    assert ds.n_genes == spec.n_genes
    assert np.isfinite(ds.cell_features).all() and np.isfinite(ds.drug_features).all()
    # rows point at existing entities; single drugs appear paired with themselves
    assert ds.rows.min() >= 0 and ds.rows[:, 0].max() < len(ds.cell_names) and ds.rows[:, 1:].max() < len(ds.drug_ids)
    assert (ds.rows[:, 1] == ds.rows[:, 2]).any() and (ds.rows[:, 1] != ds.rows[:, 2]).any()
    # every growth equals the independently recomputed min-over-grid of replicate means / 100
    ref = _reference_growth(tiny_dir)
    for (c, d1, d2), g in zip(ds.rows, ds.growth):
        key = (ds.cell_names[c], ds.drug_ids[d1], ds.drug_ids[d2])
        assert g == pytest.approx(ref[key], abs=1e-5)
    assert len(ds) == len([k for k in ref if k[0] in set(ds.cell_names) and k[1] in set(ds.drug_ids)
                           and k[2] in set(ds.drug_ids)])
    assert ds.growth.min() > -2.0  # invalid wells (500 points lower) never reach the minimum


def test_hand_written_files_follow_the_documented_rules(tmp_path):
    """A few wells written by hand: replicates averaged, grid minimum, VALID=N dropped, names mapped."""
    header = ",".join(cd.RESPONSE_COLUMNS)

    def well(cell, nsc1, conc1, nsc2, conc2, growth, valid="Y"):
        values = dict.fromkeys(cd.RESPONSE_COLUMNS, "")
        values.update(CELLNAME=cell, NSC1=nsc1, CONC1=conc1, NSC2=nsc2, CONC2=conc2, PERCENTGROWTH=growth,
                      VALID=valid, CONCUNIT1="M", SCREENER="FF")
        return ",".join(str(values[c]) for c in cd.RESPONSE_COLUMNS)

    lines = [header,
             well("MCF7", 740, "1.00E-06", 3088, "1.00E-06", 50),
             well("MCF7", 740, "1.00E-06", 3088, "1.00E-06", 30),   # replicate: mean 40
             well("MCF7", 740, "1.00E-05", 3088, "1.00E-06", 60),   # higher cell of the grid
             well("MCF7", 740, "1.00E-05", 3088, "1.00E-05", -400, valid="N"),  # dropped
             well("MCF7", 740, "1.00E-06", "", "", 80),             # single drug: (740, 740)
             well("SF-268", 740, "1.00E-06", 3088, "1.00E-06", 10),
             well("UNMAPPED", 740, "1.00E-06", 3088, "1.00E-06", 10)]
    (tmp_path / cd.RESPONSE_FILE).write_text("\n".join(lines) + "\n")
    (tmp_path / cd.CELLMAP_FILE).write_text("Name\tCELLNAME\tNCI60.ID\nMCF7\tBR:MCF7\tNCI60.MCF7\n"
                                            "SF-268\tCNS:SF-268\tNCI60.SF-268\n")
    (tmp_path / cd.CELLMAP_NEW_FILE).write_text("NCI60.ID\tCELLNAME\nNCI60.MCF7\tBR:MCF7\nNCI60.SF-268\tCNS:SF-268\n")
    (tmp_path / cd.EXPRESSION_FILE).write_text("Sample\tA\tB\nNCI60.MCF7\t1.0\t2.0\nCCLE.MCF7\t9\t9\n"
                                               "NCI60.SF-268\t3.0\t4.0\n")
    (tmp_path / cd.DESCRIPTOR_FILE).write_text("NAME\tMW\tnAT\tempty\nNSC.740\t100\tna\tna\nNSC.3088\t300\t7\tna\n")
    ds = cd.build_dataset(tmp_path)
    got = {(ds.cell_names[c], ds.drug_ids[a], ds.drug_ids[b]): round(float(g), 6) for (c, a, b), g in zip(ds.rows, ds.growth)}
    assert got == {("BR.MCF7", "740", "3088"): 0.4, ("BR.MCF7", "740", "740"): 0.8, ("CNS.SF-268", "740", "3088"): 0.1}
    assert ds.cell_names == ["BR.MCF7", "CNS.SF-268"] and ds.gene_names == ["A", "B"]
    assert ds.descriptor_names == ["MW", "nAT"]
    np.testing.assert_allclose(ds.drug_features, [[100, 7], [300, 7]])  # 'na' imputed with the column mean


def test_scalings_match_scikit_learn(tiny_dir):
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    ds = cd.build_dataset(tiny_dir)
    for name, scaler in [("std", StandardScaler()), ("minmax", MinMaxScaler()), ("maxabs", MaxAbsScaler())]:
        cell, drug = ds.scaled(name)
        np.testing.assert_allclose(cell, scaler.fit_transform(ds.cell_features.astype(np.float64)), atol=1e-5)
        np.testing.assert_allclose(drug, scaler.fit_transform(ds.drug_features.astype(np.float64)), atol=1e-4)
    const = np.ones((4, 2), np.float32)
    for name in cd.SCALINGS:
        assert np.isfinite(cd.scale_matrix(const, name)).all()
    with pytest.raises(ValueError, match="unknown scaling"):
        cd.scale_matrix(const, "robust")


def test_split_is_seeded_disjoint_and_sized(tiny_dir):
    ds = cd.build_dataset(tiny_dir)
    s = ds.split(seed=2017)
    n = len(ds)
    assert len(s["valid"]) == int(n * 0.2) and len(s["test"]) == int(n * 0.2)
    assert len(s["train"]) == n - 2 * int(n * 0.2)
    assert len(np.unique(np.concatenate(list(s.values())))) == n
    again = ds.split(seed=2017)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    assert not np.array_equal(s["train"], ds.split(seed=1)["train"])
    small = ds.split(seed=2017, max_rows=100)
    assert sum(len(v) for v in small.values()) == 100


def test_parsed_arrays_are_cached_and_loaded_once_per_process(tmp_path, monkeypatch):
    data = cd.write_synthetic_combo(tmp_path / "data", "tiny", seed=1)
    cache = tmp_path / "cache"
    first = cd.load_dataset(data, cache)
    saved = list((cache / "processed").glob("combo-*.npz"))
    assert len(saved) == 1

    def no_parse(_):
        raise AssertionError("the processed cache should have been used")

    monkeypatch.setattr(cd, "build_dataset", no_parse)
    second = cd.load_dataset(data, cache)
    np.testing.assert_array_equal(first.rows, second.rows)
    np.testing.assert_array_equal(first.drug_features, second.drug_features)
    assert second.drug_ids == first.drug_ids and second.stats == first.stats
    a, b = cd.get_dataset(data, cache), cd.get_dataset(data, cache)
    assert a is b  # one load per worker process, reused by every evaluation
    # a changed source file is noticed (its size and time are part of the cache key)
    with open(data / cd.CELLMAP_NEW_FILE, "a") as f:
        f.write("NCI60.EXTRA\tXX:EXTRA\tEXTRA\n")
    with pytest.raises(AssertionError, match="processed cache"):
        cd.load_dataset(data, cache)


def test_staged_directory_and_synthetic_resolution(tmp_path):
    with pytest.raises(cd.DataError) as err:
        cd.resolve_data(str(tmp_path / "nowhere"), tmp_path / "cache")
    assert "curl" in str(err.value) and cd.RESPONSE_FILE in str(err.value)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / cd.RESPONSE_FILE).write_text("x")
    with pytest.raises(cd.DataError, match="lacks .*combined_rnaseq_data_lincs1000"):
        cd.resolve_data(str(tmp_path / "partial"), tmp_path / "cache")
    d, label = cd.resolve_data("synthetic", tmp_path / "cache", synthetic_size="tiny", seed=5)
    assert label == "synthetic-tiny-seed5" and cd.check_staged(d) == d
    mtime = (d / cd.RESPONSE_FILE).stat().st_mtime_ns
    d2, _ = cd.resolve_data("synthetic", tmp_path / "cache", synthetic_size="tiny", seed=5)
    assert d2 == d and (d / cd.RESPONSE_FILE).stat().st_mtime_ns == mtime  # not regenerated
    staged = cd.copy_staged(d, tmp_path / "staged")
    d3, label3 = cd.resolve_data(str(staged), tmp_path / "cache")
    assert d3 == staged and label3.startswith("staged:")


# -- downloads from a real local server ----------------------------------------------------------
def _served(directory):
    files = {n: (directory / n).read_bytes() for n in cd.REQUIRED_FILES}
    manifest = tuple(cd.RemoteFile(n, "test", len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items())
    return files, manifest


def test_download_resumes_a_transfer_cut_off_part_way(tiny_dir, tmp_path):
    files, manifest = _served(tiny_dir)
    with FileServer(files, cut={cd.RESPONSE_FILE, cd.DESCRIPTOR_FILE}) as server:
        raw = cd.download_combo_data(tmp_path / "cache", base_url=server.url, files=manifest, backoff=0.01)
    for name, body in files.items():
        assert (raw / name).read_bytes() == body
    assert not list(raw.glob("*.part"))
    for name in (cd.RESPONSE_FILE, cd.DESCRIPTOR_FILE):
        reqs = [r for r in server.requests if r["name"] == name]
        assert reqs[0]["status"] == 200 and reqs[0]["cut_after"] > 0
        assert reqs[1]["range"] == f"bytes={reqs[0]['cut_after']}-" and reqs[1]["status"] == 206
    ds = cd.build_dataset(raw)  # the downloaded files parse
    assert len(ds) == len(cd.build_dataset(tiny_dir))
    # files already present are checked, not fetched again
    before = len(server.requests)
    cd.download_combo_data(tmp_path / "cache", base_url=server.url, files=manifest)
    assert len(server.requests) == before


def test_download_continues_an_existing_partial_file_and_copes_with_servers_ignoring_range(tiny_dir, tmp_path):
    files, manifest = _served(tiny_dir)
    body = files[cd.RESPONSE_FILE]
    dest = tmp_path / cd.RESPONSE_FILE
    (tmp_path / (cd.RESPONSE_FILE + ".part")).write_bytes(body[:1000])
    with FileServer(files) as server:
        cd.download_file(server.url + cd.RESPONSE_FILE, dest, size=len(body))
    assert dest.read_bytes() == body and server.requests[0]["range"] == "bytes=1000-"
    dest.unlink()
    (tmp_path / (cd.RESPONSE_FILE + ".part")).write_bytes(body[:1000])
    with FileServer(files, ignore_range=True) as server:
        cd.download_file(server.url + cd.RESPONSE_FILE, dest, size=len(body))
    assert dest.read_bytes() == body and server.requests[0]["status"] == 200
    # a complete .part left by an interrupted run: the server answers 416 and the file is checked and kept
    dest.unlink()
    (tmp_path / (cd.RESPONSE_FILE + ".part")).write_bytes(body)
    with FileServer(files) as server:
        cd.download_file(server.url + cd.RESPONSE_FILE, dest, size=len(body))
    assert dest.read_bytes() == body and server.requests[0]["status"] == 416


def test_a_file_of_the_wrong_size_or_checksum_is_refused(tiny_dir, tmp_path):
    files, _ = _served(tiny_dir)
    body = files[cd.CELLMAP_FILE]
    with FileServer(files) as server:
        url = server.url + cd.CELLMAP_FILE
        with pytest.raises(cd.DataError, match="expected"):
            cd.download_file(url, tmp_path / "a" / cd.CELLMAP_FILE, size=len(body) + 7, backoff=0.01)
        assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
        with pytest.raises(cd.DataError, match="SHA-256"):
            cd.download_file(url, tmp_path / "b" / cd.CELLMAP_FILE, size=len(body),
                             sha256=hashlib.sha256(b"something else").hexdigest())
        assert not any((tmp_path / "b").iterdir())  # no partial or corrupt file is left behind
        # a wrong checksum through the dataset entry point keeps the staging advice
        bad = tuple(cd.RemoteFile(n, "t", len(b), "0" * 64) for n, b in files.items())
        with pytest.raises(cd.DataError) as err:
            cd.download_combo_data(tmp_path / "c", base_url=server.url, files=bad)
        assert "SHA-256" in str(err.value) and "curl" in str(err.value)
        missing = (cd.RemoteFile("not_there.txt", "t"),)
        with pytest.raises(cd.DataError, match="404"):
            cd.download_combo_data(tmp_path / "d", base_url=server.url, files=missing)
    # a wrong file already in the cache is refused too
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / cd.CELLMAP_FILE).write_bytes(b"truncated")
    with pytest.raises(cd.DataError, match="size"):
        cd.download_file("http://127.0.0.1:9/x", tmp_path / "e" / cd.CELLMAP_FILE, size=len(body))


def test_without_a_server_the_error_says_how_to_stage_the_files(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/pub/candle/"
    with pytest.raises(cd.DataError) as err:
        cd.download_combo_data(tmp_path / "cache", base_url=url, retries=1, backoff=0.01, timeout=5)
    text = str(err.value)
    assert "could not download" in text and "by hand" in text
    assert str(tmp_path / "cache" / "raw") in text
    assert all(name in text for name in cd.REQUIRED_FILES)
    assert "curl -fL -C - -O " + url in text and "--data DIRECTORY" in text


def test_staging_instructions_name_every_file_and_the_public_url():
    text = cd.staging_instructions("/lus/eagle/projects/X/combo")
    assert cd.DATA_URL in text and "/lus/eagle/projects/X/combo" in text
    assert all(name in text for name in cd.REQUIRED_FILES)


def test_manifest_lists_the_five_files():
    assert [f.name for f in cd.MANIFEST] == list(cd.REQUIRED_FILES)
    assert len(set(cd.REQUIRED_FILES)) == 5
    assert os.path.basename(cd.DATA_URL.rstrip("/")) == "combo"
