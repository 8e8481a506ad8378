#!/usr/bin/env python
"""Seconds per Combo training epoch on the GPU and on the CPU, at the real dataset's sizes. Prints JSON.

The default configuration of the original benchmark (3 x 1000 units everywhere, relu, adam, mse,
batch 32: 13,742,001 parameters with 923 expression features and 3,809 descriptors per drug) is
trained on 85,303 synthetic (cell, drug, drug) rows (60/20/20 split) through the same code path as
the objective (``train_and_evaluate``). Each epoch's time includes its validation pass.

The CPU is slow at this size, so its run is capped by ``--cpu-budget`` seconds: if the epochs do
not finish in time, the seconds per epoch are extrapolated from the steps done (``extrapolated``).
The whole script stays within about five minutes with the defaults.

Usage:  python benchmarks/gpu_epoch.py [--epochs 2] [--cpu-budget 150] [--amp] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch

from adbo.objectives.candle_combo import DEFAULT_CONFIG, count_parameters, build_model, train_and_evaluate
from adbo.objectives.candle_data import SYNTHETIC_PRESETS, SyntheticSpec, synthetic_dataset


def measure(ds, split, device: str, epochs: int, budget: float | None, amp: str, batch_size: int) -> dict:
    params = {**DEFAULT_CONFIG, "batch_size": batch_size}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        # one short warm-up (kernel selection, allocator), not counted
        train_and_evaluate(params, ds, {k: v[:4096] for k, v in split.items()}, epochs=1, device=device, amp=amp)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    res = train_and_evaluate(params, ds, split, epochs=epochs, device=device, amp=amp, time_budget=budget)
    wall = time.perf_counter() - t
    n_train = len(split["train"])
    steps_per_epoch = math.ceil(n_train / batch_size)
    per_epoch, extrapolated = [], False
    for h in res.history:
        if h["epoch_steps"] >= steps_per_epoch:
            per_epoch.append(h["seconds"] + h["val_seconds"])
        else:  # cut by the budget: scale the training part to a whole epoch
            per_step = h["seconds"] / max(h["epoch_steps"], 1)
            per_epoch.append(per_step * steps_per_epoch + h["val_seconds"])
            extrapolated = True
    out = {
        "device": device,
        "amp": res.amp,
        "epochs_timed": len(per_epoch),
        "seconds_per_epoch": [round(s, 3) for s in per_epoch],
        "mean_seconds_per_epoch": round(sum(per_epoch) / len(per_epoch), 3) if per_epoch else None,
        "extrapolated": extrapolated,
        "steps": res.steps,
        "steps_per_second": round(res.steps / sum(h["seconds"] for h in res.history), 2) if res.history else None,
        "val_r2": round(res.val_r2, 4) if math.isfinite(res.val_r2) else None,
        "wall_seconds": round(wall, 2),
        "stopped": res.stopped,
        "error": res.error or None,
    }
    if device.startswith("cuda"):
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        out["gpu_name"] = torch.cuda.get_device_name(device)
    else:
        out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=85_303, help="(cell, drug, drug) rows (default: 85,303, the real count)")
    p.add_argument("--genes", type=int, default=923, help="expression features (default: 923)")
    p.add_argument("--descriptors", type=int, default=3809, help="descriptors per drug (default: 3,809)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per device (default: 2)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32, the original's)")
    p.add_argument("--cpu-budget", type=float, default=150.0, help="seconds the CPU run may take (default: 150)")
    p.add_argument("--cpu-threads", type=int, default=None, help="torch threads on the CPU (default: all cores)")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU run")
    p.add_argument("--amp", action="store_true", help="also time the GPU with mixed precision (bf16)")
    args = p.parse_args()

    t0 = time.perf_counter()
    spec = SyntheticSpec(**{**SYNTHETIC_PRESETS["full"].to_dict(), "n_genes": args.genes,
                            "n_descriptors": args.descriptors})
    ds = synthetic_dataset(spec, seed=0, n_rows=args.rows)
    split = ds.split(2017)
    n_params = count_parameters(build_model(DEFAULT_CONFIG, ds.n_genes, ds.n_descriptors))
    report: dict = {
        "benchmark": "candle_combo_epoch",
        "rows": len(ds), "train_rows": len(split["train"]), "genes": ds.n_genes, "descriptors": ds.n_descriptors,
        "parameters": n_params, "batch_size": args.batch_size, "config": "original default (3 x 1000, relu, adam, mse)",
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
        "gpu_available": torch.cuda.is_available(), "data_seconds": round(time.perf_counter() - t0, 2),
    }
    if torch.cuda.is_available():
        report["gpu"] = measure(ds, split, "cuda:0", args.epochs, None, "off", args.batch_size)
        if args.amp:
            report["gpu_amp"] = measure(ds, split, "cuda:0", args.epochs, None, "bf16", args.batch_size)
    else:
        report["gpu"] = None
        report["note"] = "no GPU visible (torch.cuda.is_available() is False): CPU figures only"
    if not args.no_cpu:
        if args.cpu_threads:
            torch.set_num_threads(args.cpu_threads)
        report["cpu_run"] = measure(ds, split, "cpu", args.epochs, args.cpu_budget, "off", args.batch_size)
    gpu, cpu = report.get("gpu"), report.get("cpu_run")
    if gpu and cpu and gpu["mean_seconds_per_epoch"] and cpu["mean_seconds_per_epoch"]:
        report["cpu_over_gpu"] = round(cpu["mean_seconds_per_epoch"] / gpu["mean_seconds_per_epoch"], 1)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
