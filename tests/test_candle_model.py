"""CANDLE Combo in PyTorch: the space, the model, each hyperparameter's effect, real training runs."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the CANDLE objective needs torch: pip install -e '.[candle]'")

import adbo  # noqa: E402
from adbo.evaluation import evaluate
from adbo.objectives import candle_combo as cc
from adbo.objectives import candle_data as cd
from adbo.storage import FAILED, OK

torch.set_num_threads(1)  # small models on a shared 2-core machine: one thread is fastest

NAMES = [f"dense_{i}" for i in range(3)] + [f"dense_feature_layers_{i}" for i in range(3)] + [
    "activation", "optimizer", "dropout", "batch_size", "learning_rate", "base_lr", "residual", "early_stopping",
    "early_stopping_patience", "reduce_lr", "reduce_lr_factor", "reduce_lr_patience", "warmup_lr",
    "batch_normalization", "loss", "scaling"]

BASE = {**cc.DEFAULT_CONFIG, **{f"dense_{i}": 32 for i in range(3)}, **{f"dense_feature_layers_{i}": 32 for i in range(3)}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = cd.write_synthetic_combo(tmp_path_factory.mktemp("tiny"), "tiny", seed=0)
    ds = cd.build_dataset(d)
    return d, ds, ds.split(2017)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = cd.write_synthetic_combo(tmp_path_factory.mktemp("small"), "small", seed=0)
    return d


def run(tiny, params, **kw):
    _, ds, split = tiny
    kw.setdefault("epochs", 1)
    kw.setdefault("device", "cpu")
    return cc.train_and_evaluate(params, ds, split, **kw)


def model(params, seed=0, genes=24, descriptors=40):
    return cc.build_model(params, genes, descriptors, generator=torch.Generator().manual_seed(seed))


def inputs(seed=1, genes=24, descriptors=40, n=16):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, genes, generator=g), torch.randn(n, descriptors, generator=g),
            torch.randn(n, descriptors, generator=g))


# -- the space -------------------------------------------------------------------------------
def test_space_has_the_papers_22_hyperparameters_with_conditions():
    cs = cc.combo_space()
    assert sorted(cs.keys()) == sorted(NAMES) and len(NAMES) == 22
    for name in NAMES[:6]:
        hp = cs[name]
        assert (hp.lower, hp.upper, hp.log) == (10, 1024, True)
    assert list(cs["activation"].choices) == list(cc.ACTIVATIONS) and len(cc.ACTIVATIONS) == 11
    assert list(cs["optimizer"].choices) == ["sgd", "rmsprop", "adagrad", "adadelta", "adam"]
    assert list(cs["loss"].choices) == ["mse", "mae", "logcosh", "mape", "msle", "huber"]
    assert list(cs["scaling"].choices) == ["std", "minmax", "maxabs"]
    assert (cs["batch_size"].lower, cs["batch_size"].upper, cs["batch_size"].log) == (8, 512, True)
    for name in ("learning_rate", "base_lr"):
        assert (cs[name].lower, cs[name].upper, cs[name].log) == (1e-5, 1e-2, True)
    assert (cs["dropout"].lower, cs["dropout"].upper) == (0.0, 0.5)
    assert (cs["reduce_lr_factor"].lower, cs["reduce_lr_factor"].upper) == (0.1, 1.0)
    for name in ("early_stopping_patience", "reduce_lr_patience"):
        assert (cs[name].lower, cs[name].upper) == (5, 20)
    parents = {c.child.name: (c.parent.name, c.value) for c in cs.conditions}
    assert parents == {"base_lr": ("warmup_lr", True), "early_stopping_patience": ("early_stopping", True),
                       "reduce_lr_factor": ("reduce_lr", True), "reduce_lr_patience": ("reduce_lr", True)}
    # the original's default model is the space's default and is expressible
    assert dict(cs.get_default_configuration()) == cc.default_config()
    space = adbo.SearchSpace(cs)
    assert space.decode(space.encode([cc.default_config()]))[0] == pytest.approx(cc.default_config())
    for p in space.decode(space.sample(200, np.random.default_rng(0))):
        assert ("base_lr" in p) == p["warmup_lr"]
        assert ("early_stopping_patience" in p) == p["early_stopping"]
        assert ("reduce_lr_factor" in p) == ("reduce_lr_patience" in p) == p["reduce_lr"]


def test_default_model_has_the_originals_13_7_million_parameters_and_trains(tiny):
    m = cc.build_model(cc.default_config(), 923, 3809)
    assert cc.count_parameters(m) == 13_742_001  # 923 genes, 3,809 descriptors, 3 x 1000 everywhere
    # one drug encoder, shared by both drugs
    assert sum(1 for name, _ in m.named_children() if "drug" in name) == 1
    res = run(tiny, cc.default_config(), epochs=1)
    assert res.ok and res.epochs == 1 and math.isfinite(res.val_r2) and math.isfinite(res.test_r2)
    assert res.n_params == cc.count_parameters(cc.build_model(cc.default_config(), 24, 40))


# -- each hyperparameter changes something observable --------------------------------------------
def _check_dense(tiny, i):
    a, b = model(BASE), model({**BASE, f"dense_{i}": 17})
    assert b.top[i].linear.out_features == 17 and a.top[i].linear.out_features == 32
    assert cc.count_parameters(a) != cc.count_parameters(b)


def _check_feature(tiny, i):
    b = model({**BASE, f"dense_feature_layers_{i}": 17})
    assert b.cell_encoder[i].linear.out_features == 17 and b.drug_encoder[i].linear.out_features == 17
    assert model(BASE).cell_encoder[i].linear.out_features == 32


def _check_activation(tiny):
    x = inputs()
    outs = {}
    for act in cc.ACTIVATIONS:
        m = model({**BASE, "activation": act}).eval()
        assert type(m.top[0].act) is type(cc.make_activation(act))
        assert type(m.cell_encoder[0].act) is torch.nn.ReLU  # the original's encoders are always relu
        with torch.no_grad():
            outs[act] = m(*x)
    for a in cc.ACTIVATIONS:
        for b in cc.ACTIVATIONS:
            if a < b:
                assert not torch.allclose(outs[a], outs[b]), (a, b)
    t = torch.tensor([-5.0, -1.0, 0.0, 1.0, 5.0])
    assert torch.allclose(cc.KerasHardSigmoid()(t), torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0]))


def _check_optimizer(tiny):
    results = {}
    for name in cc.OPTIMIZERS:
        opt = cc.make_optimizer(name, [torch.nn.Parameter(torch.zeros(1))], 0.01)
        assert type(opt).__name__.lower() == name
        results[name] = run(tiny, {**BASE, "optimizer": name}).val_r2
    assert len(set(results.values())) == len(cc.OPTIMIZERS), results


def _check_dropout(tiny):
    assert not any(isinstance(m, torch.nn.Dropout) for m in model(BASE).modules())
    m = model({**BASE, "dropout": 0.3})
    drops = [mod for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert len(drops) == 9 and all(d.p == 0.3 for d in drops)
    x = inputs()
    m.train()
    assert not torch.allclose(m(*x), m(*x))  # masks differ between training passes
    m.eval()
    assert torch.allclose(m(*x), m(*x))  # off at inference (a deliberate difference)
    p = cc.build_model({**BASE, "dropout": 0.3}, 24, 40, permanent_dropout=True).eval()
    assert not torch.allclose(p(*x), p(*x))  # the original's PermanentDropout, on request


def _check_batch_size(tiny):
    n_train = len(tiny[2]["train"])
    for bs in (32, 100):
        res = run(tiny, {**BASE, "batch_size": bs})
        assert res.steps == math.ceil(n_train / bs)


def _check_learning_rate(tiny):
    a = run(tiny, {**BASE, "learning_rate": 1e-3})
    b = run(tiny, {**BASE, "learning_rate": 1e-2})
    assert a.history[0]["lr"] == 1e-3 and b.history[0]["lr"] == 1e-2 and a.val_r2 != b.val_r2


def _check_base_lr(tiny):
    cfg = {**BASE, "warmup_lr": True, "learning_rate": 1e-3}
    a = run(tiny, {**cfg, "base_lr": 1e-4}, epochs=2)
    b = run(tiny, {**cfg, "base_lr": 5e-4}, epochs=2)
    assert [h["lr"] for h in a.history] == pytest.approx([1e-4, 1e-4 + (1e-3 - 1e-4) / 5])
    assert b.history[0]["lr"] == pytest.approx(5e-4)


def _check_warmup_lr(tiny):
    off = cc.EpochController(learning_rate=1e-3)
    on = cc.EpochController(learning_rate=1e-3, warmup_lr=True, base_lr=1e-5)
    assert [off.begin_epoch(e) for e in range(8)] == [1e-3] * 8
    lrs = [on.begin_epoch(e) for e in range(8)]
    assert lrs == pytest.approx([1e-5 + (1e-3 - 1e-5) * min(e, 5) / 5 for e in range(8)])
    res = run(tiny, {**BASE, "warmup_lr": True, "base_lr": 1e-5}, epochs=3)
    assert [h["lr"] for h in res.history] == pytest.approx(lrs[:3])


def _check_residual(tiny):
    a, b = model(BASE), model({**BASE, "residual": True})
    assert [blk.residual for blk in b.top] == [False, True, True]  # 96 -> 32 changes width, then adds
    assert not any(blk.residual for blk in b.cell_encoder)  # the original adds only in the top layers
    assert not b.top[0].residual and model({**BASE, "residual": True, "dense_1": 20}).top[1].residual is False
    x = inputs()
    with torch.no_grad():
        assert not torch.allclose(a.eval()(*x), b.eval()(*x))  # same weights, different function


def _check_batch_normalization(tiny):
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model(BASE).modules())
    m = model({**BASE, "batch_normalization": True})
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm1d)]
    assert len(bns) == 9 and bns[0].momentum == 0.01 and bns[0].eps == 1e-3  # Keras' 0.99 / 1e-3
    before = bns[0].running_mean.clone()
    m.train()(*inputs())
    assert not torch.equal(before, bns[0].running_mean)
    assert run(tiny, {**BASE, "batch_normalization": True}).ok


def _scripted(ctrl, losses):
    stops, lrs = [], []
    for e, v in enumerate(losses):
        ctrl.begin_epoch(e)
        stops.append(ctrl.end_epoch(v))
        lrs.append(ctrl.lr)
    return stops, lrs


def _check_early_stopping(tiny):
    flat = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    assert not any(_scripted(cc.EpochController(1e-3), flat)[0])
    stops, _ = _scripted(cc.EpochController(1e-3, early_stopping=True, early_stopping_patience=5), flat)
    assert stops.index(True) == 6  # five epochs without improvement after the best (epoch 1)


def _check_early_stopping_patience(tiny):
    flat = [1.0] + [2.0] * 12
    for patience in (5, 8):
        stops, _ = _scripted(cc.EpochController(1e-3, early_stopping=True, early_stopping_patience=patience), flat)
        assert stops.index(True) == patience


def _check_reduce_lr(tiny):
    flat = [1.0] + [1.0] * 7
    assert _scripted(cc.EpochController(1e-3), flat)[1] == [1e-3] * 8
    _, lrs = _scripted(cc.EpochController(1e-3, reduce_lr=True, reduce_lr_factor=0.5, reduce_lr_patience=5), flat)
    assert lrs == pytest.approx([1e-3] * 5 + [5e-4] * 3)
    # in a real run: one SGD step per epoch at a tiny rate cannot improve the loss by 1e-4
    cfg = {**BASE, "optimizer": "sgd", "learning_rate": 1.5e-5, "batch_size": 512, "reduce_lr": True,
           "reduce_lr_factor": 0.8, "reduce_lr_patience": 5}
    res = run(tiny, cfg, epochs=8)
    assert [h["lr"] for h in res.history] == pytest.approx([1.5e-5] * 6 + [1.2e-5] * 2)


def _check_reduce_lr_factor(tiny):
    for factor in (0.5, 0.3):
        _, lrs = _scripted(cc.EpochController(1e-3, reduce_lr=True, reduce_lr_factor=factor, reduce_lr_patience=5), [1.0] * 7)
        assert lrs[-1] == pytest.approx(1e-3 * factor)
    _, lrs = _scripted(cc.EpochController(2e-5, reduce_lr=True, reduce_lr_factor=0.1, reduce_lr_patience=5), [1.0] * 14)
    assert min(lrs) == pytest.approx(cc.MIN_LR)  # the original's floor


def _check_reduce_lr_patience(tiny):
    for patience in (5, 9):
        _, lrs = _scripted(cc.EpochController(1e-3, reduce_lr=True, reduce_lr_factor=0.5, reduce_lr_patience=patience), [1.0] * 12)
        assert lrs.index(5e-4) == patience


def _check_loss(tiny):
    pred = torch.tensor([0.5, -0.2, 3.0, 0.0])
    y = torch.tensor([0.4, 0.1, -0.3, 0.2])
    d = pred - y
    expected = {
        "mse": float((d ** 2).mean()), "mae": float(d.abs().mean()),
        "logcosh": float(torch.log(torch.cosh(d)).mean()),
        "mape": float(100 * (d.abs() / y.abs()).mean()),
        "msle": float(((torch.log1p(pred.clamp_min(1e-7)) - torch.log1p(y.clamp_min(1e-7))) ** 2).mean()),
        "huber": float(torch.where(d.abs() <= 1, 0.5 * d ** 2, d.abs() - 0.5).mean()),
    }
    got = {name: float(cc.keras_loss(name, pred, y)) for name in cc.LOSSES}
    assert got == pytest.approx(expected, rel=1e-5)
    assert len({round(v, 6) for v in got.values()}) == 6
    assert math.isfinite(float(cc.keras_loss("mape", pred, torch.zeros(4))))  # Keras clamps |y| at 1e-7
    assert run(tiny, {**BASE, "loss": "mae"}).val_loss != run(tiny, {**BASE, "loss": "mse"}).val_loss


def _check_scaling(tiny):
    _, ds, _ = tiny
    std, mm, ma = (ds.scaled(s)[1] for s in ("std", "minmax", "maxabs"))
    assert np.allclose(std.mean(0), 0, atol=1e-4) and np.allclose(std.std(0), 1, atol=1e-3)
    assert mm.min() == pytest.approx(0) and mm.max() == pytest.approx(1)
    assert np.abs(ma).max() == pytest.approx(1) and not np.allclose(mm, ma)
    assert run(tiny, {**BASE, "scaling": "minmax"}).val_r2 != run(tiny, {**BASE, "scaling": "std"}).val_r2


CHECKS = {
    **{f"dense_{i}": (lambda t, i=i: _check_dense(t, i)) for i in range(3)},
    **{f"dense_feature_layers_{i}": (lambda t, i=i: _check_feature(t, i)) for i in range(3)},
    "activation": _check_activation, "optimizer": _check_optimizer, "dropout": _check_dropout,
    "batch_size": _check_batch_size, "learning_rate": _check_learning_rate, "base_lr": _check_base_lr,
    "residual": _check_residual, "early_stopping": _check_early_stopping,
    "early_stopping_patience": _check_early_stopping_patience, "reduce_lr": _check_reduce_lr,
    "reduce_lr_factor": _check_reduce_lr_factor, "reduce_lr_patience": _check_reduce_lr_patience,
    "warmup_lr": _check_warmup_lr, "batch_normalization": _check_batch_normalization, "loss": _check_loss,
    "scaling": _check_scaling,
}


@pytest.mark.parametrize("name", sorted(cc.combo_space().keys()))
def test_each_hyperparameter_changes_the_model_or_the_training_run(tiny, name):
    assert name in CHECKS, f"no check for hyperparameter {name}"
    CHECKS[name](tiny)


def test_early_stopping_ends_the_training_loop(tiny, monkeypatch):
    calls = []

    def stop_at_second(self, val_loss):
        calls.append(val_loss)
        return len(calls) == 2

    monkeypatch.setattr(cc.EpochController, "end_epoch", stop_at_second)
    res = run(tiny, {**BASE, "early_stopping": True, "early_stopping_patience": 5}, epochs=10)
    assert res.stopped == "early_stopping" and res.epochs == 2 and len(calls) == 2
    assert calls == [h["val_loss"] for h in res.history]  # it is given the validation loss


# -- training and the objective ------------------------------------------------------------------
def test_training_raises_validation_r2_well_above_an_untrained_model(small, tmp_path):
    obj = cc.ComboObjective(small, cache_dir=tmp_path, epochs=4, threads=1, device="cpu")
    cfg = {**BASE, **{k: 64 for k in BASE if k.startswith("dense")}}
    untrained = obj.train(cfg, epochs=0)
    assert untrained.epochs == 0 and math.isfinite(untrained.val_r2)
    out = obj(cfg)
    assert out["epochs"] == 4 and out["stopped"] == "max_epochs"
    assert out["val_r2"] > 0.4, out
    assert out["val_r2"] > untrained.val_r2 + 0.3, (out["val_r2"], untrained.val_r2)
    assert out["objective"] == out["val_r2"] and out["test_r2"] > 0.3
    for key in ("train_loss", "val_loss", "n_params", "train_seconds", "epochs", "test_r2"):
        assert key in out and out[key] == out[key]  # present and not NaN
    assert obj(cfg)["val_r2"] == out["val_r2"]  # a configuration is reproducible


def test_a_huge_learning_rate_is_a_clean_failed_outcome(tiny, tmp_path):
    obj = cc.ComboObjective(tiny[0], cache_dir=tmp_path, epochs=3, threads=1, device="cpu")
    bad = {**BASE, "optimizer": "sgd", "learning_rate": 1e6}
    out = obj(bad)
    assert math.isnan(out["objective"]) and "diverged" in out["error"] and out["stopped"] == "diverged"
    outcome = evaluate(obj, bad, timeout=60)  # what an adbo worker records
    assert outcome.status == FAILED and "diverged" in outcome.error and outcome.metadata["stopped"] == "diverged"
    assert evaluate(obj, BASE, timeout=60).status == OK


def test_the_time_budget_stops_training_and_reports_what_it_has(tiny, tmp_path):
    obj = cc.ComboObjective(tiny[0], cache_dir=tmp_path, epochs=50, time_budget=1e-3, threads=1, device="cpu")
    out = obj(BASE)
    assert out["stopped"] == "time_budget" and out["epochs"] == 1 and out["steps"] == 1
    assert math.isfinite(out["objective"]) and math.isfinite(out["val_r2"])


def test_mixed_precision_runs_on_the_cpu(tiny):
    assert cc.resolve_amp("off", torch.device("cpu")) is None
    assert cc.resolve_amp("auto", torch.device("cpu")) == torch.bfloat16
    assert cc.resolve_amp("fp16", torch.device("cpu")) == torch.bfloat16  # fp16 autocast is a CUDA feature
    with pytest.raises(ValueError):
        cc.resolve_amp("fp8", torch.device("cpu"))
    res = run(tiny, BASE, amp="bf16", epochs=2)
    assert res.ok and res.amp == "bfloat16" and math.isfinite(res.val_r2)
    assert res.val_r2 != run(tiny, BASE, epochs=2).val_r2


def test_device_selection_follows_the_workers_gpu(monkeypatch):
    assert cc.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert cc.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("PARSL_WORKER_RANK", "5")
    assert cc.resolve_device("auto") == torch.device("cuda:0")  # CUDA_VISIBLE_DEVICES pinned one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert cc.resolve_device("auto") == torch.device("cuda:1")  # several visible: rank modulo count
    assert cc.resolve_device("cuda:3") == torch.device("cuda:3")


def test_objective_options_threads_pickling_and_identity(tiny, tmp_path, monkeypatch):
    obj = cc.ComboObjective(tiny[0], data_label="synthetic-tiny", cache_dir=tmp_path, epochs=1, threads=1)
    copy = pickle.loads(pickle.dumps(obj))
    assert copy.adbo_identity() == obj.adbo_identity()
    assert "synthetic-tiny" in obj.adbo_identity() and "epochs=1" in obj.adbo_identity()
    other = cc.ComboObjective(tiny[0], data_label="synthetic-tiny", cache_dir=tmp_path, epochs=1, threads=2,
                              device="cpu", time_budget=10, amp="bf16")
    assert other.adbo_identity() == obj.adbo_identity()  # where and how fast it runs is not the objective
    assert cc.ComboObjective(tiny[0], data_label="synthetic-tiny", epochs=2).adbo_identity() != obj.adbo_identity()
    monkeypatch.setenv("ADBO_TORCH_THREADS", "1")
    other(BASE)
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError):
        cc.ComboObjective(tiny[0], epochs=0)


def test_the_objective_reports_validation_r2_every_epoch_and_stops_when_told(tiny, tmp_path):
    from adbo.rows import STOPPED

    obj = cc.ComboObjective(tiny[0], cache_dir=tmp_path, epochs=5, threads=1, device="cpu")
    seen = []

    def stop_at_third(step, value):  # what a worker's stopper answers
        seen.append((step, value))
        return "told to stop" if step == 3 else None

    out = evaluate(obj, BASE, timeout=None, decide=stop_at_third)
    assert out.status == STOPPED and [s for s, _ in seen] == [1.0, 2.0, 3.0]
    assert out.metadata["stopped"] == "stopper" and out.metadata["epochs"] == 3 and out.metadata["step"] == 3.0
    assert out.value == seen[-1][1] == max(-1.0, out.metadata["val_r2"]) and out.curve == seen
    full = evaluate(obj, BASE, timeout=None, decide=lambda step, value: None)
    assert full.status == OK and len(full.curve) == 5 and full.curve[:3] == seen  # the same training, not cut
