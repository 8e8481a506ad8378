"""CANDLE Pilot1 Combo in PyTorch: the model, its training, its 22-hyperparameter space, the objective.

The model follows ``build_model`` of ``Pilot1/Combo/combo_baseline_keras2.py`` (ECP-CANDLE/Benchmarks)
as DeepHyper's benchmark runs it for the ADBO paper:

* a cell encoder (``dense_feature_layers``) on the cell's expression features and one drug encoder,
  with the same layer sizes, shared by both drugs (the same weights encode drug 1 and drug 2);
* the three encodings concatenated, then ``dense`` layers with ``activation``, residual additions
  where a layer keeps its width (``residual``), then one linear output: the growth;
* dropout after every dense layer; Keras defaults everywhere else (Glorot-uniform weights, zero
  biases, the optimizers' Keras epsilons and momenta, Keras' losses, ``ReduceLROnPlateau`` with
  ``min_lr=1e-5`` and ``min_delta=1e-4``, ``EarlyStopping`` on the validation loss, and the
  original's linear warm-up from ``base_lr`` to ``learning_rate`` over the first five epochs).

The deliberate differences are listed in ``docs/candle.md`` (dropout is off at inference,
``batch_normalization`` is applied instead of being ignored, a wall-time budget per evaluation,
divergence is a failed evaluation). The objective returns the validation R2, clipped below at -1
as DeepHyper's benchmark does, with the metadata the issue asks for.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ConfigSpace import Categorical, ConfigurationSpace, EqualsCondition, Float, Integer
from torch import nn

from .candle_data import ComboDataset, get_dataset

ACTIVATIONS = ("elu", "gelu", "hard_sigmoid", "linear", "relu", "selu", "sigmoid", "softplus", "softsign",
               "swish", "tanh")
OPTIMIZERS = ("sgd", "rmsprop", "adagrad", "adadelta", "adam")
LOSSES = ("mse", "mae", "logcosh", "mape", "msle", "huber")
SCALINGS = ("std", "minmax", "maxabs")
KERAS_EPSILON = 1e-7
MIN_LR = 1e-5  # the original's ReduceLROnPlateau floor
WARMUP_EPOCHS = 5

#: The original's default model (combo_default_model.txt), in this space's terms.
DEFAULT_CONFIG: dict[str, Any] = {
    "dense_0": 1000, "dense_1": 1000, "dense_2": 1000,
    "dense_feature_layers_0": 1000, "dense_feature_layers_1": 1000, "dense_feature_layers_2": 1000,
    "activation": "relu", "optimizer": "adam", "dropout": 0.0, "batch_size": 32,
    "learning_rate": 0.001, "residual": False, "early_stopping": False, "reduce_lr": False,
    "warmup_lr": False, "batch_normalization": False, "loss": "mse", "scaling": "std",
}

#: Keras' default learning rates, used when a configuration gives no ``learning_rate``.
KERAS_DEFAULT_LR = {"sgd": 0.01, "rmsprop": 0.001, "adagrad": 0.001, "adadelta": 0.001, "adam": 0.001}


# ----------------------------------------------------------------------------------------------
# The search space
# ----------------------------------------------------------------------------------------------
def combo_space(seed: int | None = None) -> ConfigurationSpace:
    """The 22 hyperparameters the ADBO paper searched, with the original's defaults.

    Conditions: ``base_lr`` only with ``warmup_lr``, ``early_stopping_patience`` only with
    ``early_stopping``, ``reduce_lr_factor`` and ``reduce_lr_patience`` only with ``reduce_lr``
    (inactive ones are left out of the configuration the objective receives).
    """
    cs = ConfigurationSpace(seed=seed)
    for i in range(3):
        cs.add(Integer(f"dense_{i}", (10, 1024), log=True, default=1000))
    for i in range(3):
        cs.add(Integer(f"dense_feature_layers_{i}", (10, 1024), log=True, default=1000))
    cs.add([
        Categorical("activation", list(ACTIVATIONS), default="relu"),
        Categorical("optimizer", list(OPTIMIZERS), default="adam"),
        Float("dropout", (0.0, 0.5), default=0.0),
        Integer("batch_size", (8, 512), log=True, default=32),
        Float("learning_rate", (1e-5, 1e-2), log=True, default=1e-3),
    ])
    warmup = Categorical("warmup_lr", [False, True], default=False)
    base_lr = Float("base_lr", (1e-5, 1e-2), log=True, default=1e-3)
    early = Categorical("early_stopping", [False, True], default=False)
    early_patience = Integer("early_stopping_patience", (5, 20), default=5)
    reduce = Categorical("reduce_lr", [False, True], default=False)
    reduce_factor = Float("reduce_lr_factor", (0.1, 1.0), default=0.5)
    reduce_patience = Integer("reduce_lr_patience", (5, 20), default=5)
    cs.add([
        base_lr,
        Categorical("residual", [False, True], default=False),
        early, early_patience, reduce, reduce_factor, reduce_patience, warmup,
        Categorical("batch_normalization", [False, True], default=False),
        Categorical("loss", list(LOSSES), default="mse"),
        Categorical("scaling", list(SCALINGS), default="std"),
    ])
    cs.add([
        EqualsCondition(base_lr, warmup, True),
        EqualsCondition(early_patience, early, True),
        EqualsCondition(reduce_factor, reduce, True),
        EqualsCondition(reduce_patience, reduce, True),
    ])
    return cs


def default_config() -> dict[str, Any]:
    """The original's default configuration (3 x 1000 units, relu, adam, mse, std, batch 32)."""
    return dict(DEFAULT_CONFIG)


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
class KerasHardSigmoid(nn.Module):
    """Keras 2's ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1) (PyTorch's Hardsigmoid uses x / 6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


def make_activation(name: str) -> nn.Module:
    table = {
        "elu": nn.ELU, "gelu": nn.GELU, "hard_sigmoid": KerasHardSigmoid, "linear": nn.Identity,
        "relu": nn.ReLU, "selu": nn.SELU, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus,
        "softsign": nn.Softsign, "swish": nn.SiLU, "tanh": nn.Tanh,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {ACTIVATIONS}")
    return table[name]()


class PermanentDropout(nn.Dropout):
    """The original's dropout, active at inference too (``permanent_dropout=True`` reproduces it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


class DenseBlock(nn.Module):
    """Dense -> [batch norm] -> activation -> [dropout] -> [+ input, when the width is unchanged]."""

    def __init__(self, n_in: int, n_out: int, activation: str, dropout: float, residual: bool,
                 batch_norm: bool, permanent_dropout: bool):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        # Keras BatchNormalization: momentum 0.99 (PyTorch counts the other way), epsilon 1e-3
        self.norm = nn.BatchNorm1d(n_out, momentum=0.01, eps=1e-3) if batch_norm else nn.Identity()
        self.act = make_activation(activation)
        drop_cls = PermanentDropout if permanent_dropout else nn.Dropout
        self.drop = drop_cls(dropout) if dropout > 0 else nn.Identity()
        self.residual = bool(residual and n_in == n_out)  # the original adds only when shapes match

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act(self.norm(self.linear(x))))
        return h + x if self.residual else h


class DenseStack(nn.Sequential):
    def __init__(self, n_in: int, sizes: Sequence[int], activation: str, dropout: float, residual: bool,
                 batch_norm: bool, permanent_dropout: bool):
        blocks, width = [], n_in
        for n in sizes:
            blocks.append(DenseBlock(width, int(n), activation, dropout, residual, batch_norm, permanent_dropout))
            width = int(n)
        super().__init__(*blocks)
        self.out_features = width


class ComboModel(nn.Module):
    """cell encoder + shared drug encoder -> concatenation -> dense layers -> growth."""

    def __init__(self, n_genes: int, n_descriptors: int, dense: Sequence[int], dense_feature_layers: Sequence[int],
                 activation: str = "relu", dropout: float = 0.0, residual: bool = False,
                 batch_normalization: bool = False, encoder_activation: str = "relu",
                 permanent_dropout: bool = False):
        super().__init__()
        enc = dict(activation=encoder_activation, dropout=dropout, residual=False,
                   batch_norm=batch_normalization, permanent_dropout=permanent_dropout)
        self.cell_encoder = DenseStack(n_genes, dense_feature_layers, **enc)
        self.drug_encoder = DenseStack(n_descriptors, dense_feature_layers, **enc)
        merged = self.cell_encoder.out_features + 2 * self.drug_encoder.out_features
        self.top = DenseStack(merged, dense, activation, dropout, residual, batch_normalization, permanent_dropout)
        self.output = nn.Linear(self.top.out_features, 1)

    def forward(self, cell: torch.Tensor, drug1: torch.Tensor, drug2: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.cell_encoder(cell), self.drug_encoder(drug1), self.drug_encoder(drug2)], dim=1)
        return self.output(self.top(h)).squeeze(1)


def keras_init_(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Keras Dense defaults: Glorot-uniform kernels and zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, generator=generator)
            nn.init.zeros_(m.bias)


def layer_sizes(params: Mapping[str, Any], prefix: str) -> list[int]:
    return [int(params[f"{prefix}_{i}"]) for i in range(3) if f"{prefix}_{i}" in params]


def build_model(params: Mapping[str, Any], n_genes: int, n_descriptors: int, *, encoder_activation: str = "relu",
                permanent_dropout: bool = False, generator: torch.Generator | None = None) -> ComboModel:
    model = ComboModel(
        n_genes, n_descriptors,
        dense=layer_sizes(params, "dense"),
        dense_feature_layers=layer_sizes(params, "dense_feature_layers"),
        activation=params.get("activation", "relu"),
        dropout=float(params.get("dropout", 0.0)),
        residual=bool(params.get("residual", False)),
        batch_normalization=bool(params.get("batch_normalization", False)),
        encoder_activation=encoder_activation,
        permanent_dropout=permanent_dropout,
    )
    keras_init_(model, generator)
    return model


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    """The Keras optimizers with Keras' defaults besides the learning rate."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, alpha=0.9, eps=KERAS_EPSILON)
    if name == "adagrad":
        return torch.optim.Adagrad(parameters, lr=lr, initial_accumulator_value=0.1, eps=KERAS_EPSILON)
    if name == "adadelta":
        return torch.optim.Adadelta(parameters, lr=lr, rho=0.95, eps=KERAS_EPSILON)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=(0.9, 0.999), eps=KERAS_EPSILON)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def keras_loss(name: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras' regression losses (mean over the batch)."""
    diff = pred - target
    if name == "mse":
        return torch.mean(diff * diff)
    if name == "mae":
        return torch.mean(diff.abs())
    if name == "logcosh":  # log(cosh(x)) = x + softplus(-2x) - log 2, stable for large |x|
        return torch.mean(diff + F.softplus(-2.0 * diff) - math.log(2.0))
    if name == "mape":
        return 100.0 * torch.mean(diff.abs() / target.abs().clamp_min(KERAS_EPSILON))
    if name == "msle":
        a = torch.log1p(pred.clamp_min(KERAS_EPSILON))
        b = torch.log1p(target.clamp_min(KERAS_EPSILON))
        return torch.mean((a - b) ** 2)
    if name == "huber":
        return F.huber_loss(pred, target, delta=1.0)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (0.0 if ss_res == 0 else -math.inf)


# ----------------------------------------------------------------------------------------------
# The original's callbacks, as one controller per training run
# ----------------------------------------------------------------------------------------------
@dataclass
class EpochController:
    """Learning-rate warm-up, ReduceLROnPlateau and EarlyStopping, with Keras' semantics.

    ``begin_epoch(e)`` gives the learning rate to use in epoch ``e`` (0-based); ``end_epoch(val_loss)``
    updates the plateau and stopping counters and returns whether to stop.
    """

    learning_rate: float
    warmup_lr: bool = False
    base_lr: float | None = None
    reduce_lr: bool = False
    reduce_lr_factor: float = 0.5
    reduce_lr_patience: int = 5
    early_stopping: bool = False
    early_stopping_patience: int = 5
    min_lr: float = MIN_LR
    lr: float = field(init=False)
    best_reduce: float = field(init=False, default=math.inf)
    best_stop: float = field(init=False, default=math.inf)
    wait_reduce: int = field(init=False, default=0)
    wait_stop: int = field(init=False, default=0)
    reductions: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.lr = float(self.learning_rate)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], default_lr: float) -> "EpochController":
        lr = float(params.get("learning_rate") or 0.0)
        base = params.get("base_lr")
        target = lr or (float(base or default_lr) * int(params.get("batch_size", 32)) / 100.0)
        return cls(
            learning_rate=target,
            warmup_lr=bool(params.get("warmup_lr", False)),
            base_lr=float(base) if base else default_lr,
            reduce_lr=bool(params.get("reduce_lr", False)),
            reduce_lr_factor=float(params.get("reduce_lr_factor", 0.5)),
            reduce_lr_patience=int(params.get("reduce_lr_patience", 5)),
            early_stopping=bool(params.get("early_stopping", False)),
            early_stopping_patience=int(params.get("early_stopping_patience", 5)),
        )

    def begin_epoch(self, epoch: int) -> float:
        if self.warmup_lr and epoch <= WARMUP_EPOCHS:  # the original's warmup_scheduler
            base = self.base_lr if self.base_lr is not None else self.learning_rate
            self.lr = (base * (WARMUP_EPOCHS - epoch) + self.learning_rate * epoch) / WARMUP_EPOCHS
        return self.lr

    def end_epoch(self, val_loss: float) -> bool:
        if self.reduce_lr:  # ReduceLROnPlateau(monitor='val_loss', min_delta=1e-4, min_lr=1e-5)
            if val_loss < self.best_reduce - 1e-4:
                self.best_reduce, self.wait_reduce = val_loss, 0
            else:
                self.wait_reduce += 1
                if self.wait_reduce >= self.reduce_lr_patience and self.lr > self.min_lr:
                    self.lr = max(self.lr * self.reduce_lr_factor, self.min_lr)
                    self.wait_reduce = 0
                    self.reductions += 1
        if self.early_stopping:  # EarlyStopping(monitor='val_loss', min_delta=0)
            if val_loss < self.best_stop:
                self.best_stop, self.wait_stop = val_loss, 0
            else:
                self.wait_stop += 1
                if self.wait_stop >= self.early_stopping_patience:
                    return True
        return False


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
class Diverged(RuntimeError):
    pass


@dataclass
class TrainResult:
    """What one training run produced; ``metadata()`` is what an adbo row stores."""

    val_r2: float
    test_r2: float
    train_loss: float
    val_loss: float
    val_mae: float
    epochs: int
    stopped: str
    n_params: int
    train_seconds: float
    final_lr: float
    steps: int
    device: str
    amp: str
    error: str = ""
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error

    def metadata(self) -> dict[str, Any]:
        return {
            "val_r2": self.val_r2, "test_r2": self.test_r2, "train_loss": self.train_loss,
            "val_loss": self.val_loss, "val_mae": self.val_mae, "epochs": self.epochs, "stopped": self.stopped,
            "n_params": self.n_params, "train_seconds": round(self.train_seconds, 3),
            "final_lr": self.final_lr, "steps": self.steps, "device": self.device, "amp": self.amp,
        }


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto``: the GPU this worker was given (Parsl sets ``CUDA_VISIBLE_DEVICES`` per worker; with
    several visible, worker rank ``PARSL_WORKER_RANK`` modulo their number), else the CPU."""
    if isinstance(spec, torch.device):
        return spec
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        try:
            rank = int(os.environ.get("PARSL_WORKER_RANK", "0") or 0)
        except ValueError:
            rank = 0
        return torch.device(f"cuda:{rank % n}")
    return torch.device("cpu")


def check_device_here(spec: str) -> None:
    """Refuse a device this machine cannot give, before any worker starts (local sites only:
    a login node has no GPU although its compute nodes do)."""
    try:
        device = torch.device(spec) if spec != "auto" else None
    except RuntimeError:
        raise ValueError(f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device is not None and device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec} asked for, but this torch ({torch.__version__}) sees no CUDA device "
                             "here; use --device auto or cpu, or install the torch build for your CUDA")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def resolve_amp(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """Mixed precision: ``False``/``"off"`` none; ``True``/``"auto"`` bf16 where supported, else fp16 (CUDA);
    ``"bf16"`` or ``"fp16"`` explicitly. On the CPU only bf16 is used."""
    if amp in (False, None, "off", "none", "fp32"):
        return None
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16"):
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp in (True, "auto", "on"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16
    raise ValueError(f"unknown mixed-precision setting {amp!r}; use off, auto, bf16 or fp16")


def evaluation_seed(seed: int, params: Mapping[str, Any]) -> int:
    """A seed that depends on the configuration, so re-evaluating one reproduces it."""
    text = json.dumps({"seed": seed, "params": dict(params)}, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def train_and_evaluate(
    params: Mapping[str, Any],
    data: ComboDataset,
    split: Mapping[str, np.ndarray],
    *,
    epochs: int = 50,
    device: str | torch.device = "auto",
    amp: bool | str = False,
    time_budget: float | None = None,
    seed: int = 0,
    eval_batch_size: int = 4096,
    encoder_activation: str = "relu",
    permanent_dropout: bool = False,
    divergence_limit: float = 1e8,
    on_epoch: "Callable[[int, float], bool] | None" = None,
) -> TrainResult:
    """Train the Combo model on ``split['train']`` and score it on ``valid`` and ``test``.

    ``on_epoch(epoch, val_r2)`` is called after each epoch's validation (epochs count from 1);
    when it returns True, training stops there (``stopped="stopper"``): adbo's early stopping.

    Stops at ``epochs``, on early stopping, or when ``time_budget`` seconds have passed (checked
    after every batch: the model trained so far is scored). A non-finite or exploding training loss
    (above ``divergence_limit``) stops the run and sets ``error``.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    amp_dtype = resolve_amp(amp, dev)
    eval_seed = evaluation_seed(seed, params)
    gen = torch.Generator().manual_seed(eval_seed)
    torch.manual_seed(eval_seed)  # dropout masks

    scaling = params.get("scaling", "std")
    cell_np, drug_np = data.scaled(scaling)
    cell_x = torch.from_numpy(np.array(cell_np, dtype=np.float32)).to(dev)
    drug_x = torch.from_numpy(np.array(drug_np, dtype=np.float32)).to(dev)
    rows = torch.from_numpy(np.array(data.rows, dtype=np.int64)).to(dev)
    growth = torch.from_numpy(np.array(data.growth, dtype=np.float32)).to(dev)
    idx = {k: torch.from_numpy(np.asarray(v, dtype=np.int64)).to(dev) for k, v in split.items()}

    model = build_model(params, data.n_genes, data.n_descriptors, encoder_activation=encoder_activation,
                        permanent_dropout=permanent_dropout, generator=gen).to(dev)
    n_params = count_parameters(model)
    opt_name = params.get("optimizer", "adam")
    ctrl = EpochController.from_params(params, KERAS_DEFAULT_LR.get(opt_name, 0.001))
    optimizer = make_optimizer(opt_name, model.parameters(), ctrl.lr)
    loss_name = params.get("loss", "mse")
    batch_size = max(1, int(params.get("batch_size", 32)))
    use_scaler = amp_dtype == torch.float16 and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    train_idx = idx["train"]
    n_train = int(train_idx.numel())
    bn = bool(params.get("batch_normalization", False))
    check_every = 1 if dev.type == "cpu" else 32

    def forward(sel: torch.Tensor) -> torch.Tensor:
        r = rows[sel]
        with torch.autocast(device_type=dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(cell_x[r[:, 0]], drug_x[r[:, 1]], drug_x[r[:, 2]])
        return out.float()

    @torch.no_grad()
    def predict(part: str) -> np.ndarray:
        model.eval()
        sel_all = idx[part]
        outs = [forward(sel_all[i:i + eval_batch_size]) for i in range(0, int(sel_all.numel()), eval_batch_size)]
        model.train()
        return torch.cat(outs).cpu().numpy() if outs else np.zeros(0, np.float32)

    def scores(part: str) -> tuple[float, float, float]:
        y = data.growth[split[part]]
        pred = predict(part)
        if not np.all(np.isfinite(pred)):
            raise Diverged(f"the model's {part} predictions are not finite")
        with torch.no_grad():
            loss = float(keras_loss(loss_name, torch.from_numpy(pred), torch.from_numpy(y)))
        return r2_score(y, pred), loss, float(np.mean(np.abs(pred - y)))

    history: list[dict[str, float]] = []
    stopped, error = "max_epochs", ""
    steps, epochs_run, train_loss = 0, 0, float("nan")
    val_r2 = val_loss = val_mae = float("nan")
    model.train()
    try:
        for epoch in range(epochs):
            lr = ctrl.begin_epoch(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            perm = train_idx[torch.randperm(n_train, generator=gen).to(dev)]
            total = torch.zeros((), dtype=torch.float32, device=dev)
            seen, epoch_steps = 0, 0
            out_of_time = False
            t_epoch = time.perf_counter()
            for start in range(0, n_train, batch_size):
                sel = perm[start:start + batch_size]
                if bn and sel.numel() < 2:  # batch norm cannot train on one sample (Keras would give NaN)
                    continue
                pred = forward(sel)
                loss = keras_loss(loss_name, pred, growth[sel])
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                n = int(sel.numel())
                total += loss.detach() * n
                seen += n
                steps += 1
                epoch_steps += 1
                # reading a GPU value waits for the GPU: check every few steps there, every step on the CPU
                if epoch_steps % check_every == 0 or start + batch_size >= n_train:
                    value = float(loss.detach())
                    if not math.isfinite(value) or value > divergence_limit or not math.isfinite(float(total)):
                        raise Diverged(f"the training loss diverged ({value:.3g}) in epoch {epoch + 1}, batch "
                                       f"{start // batch_size + 1} (optimizer={opt_name}, learning rate={lr:.3g}, "
                                       f"loss={loss_name})")
                if time_budget is not None and time.perf_counter() - t0 > time_budget:
                    out_of_time = True
                    break
            train_loss = float(total) / max(seen, 1)
            if not math.isfinite(train_loss):
                raise Diverged(f"the training loss diverged ({train_loss}) in epoch {epoch + 1}")
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t_val = time.perf_counter()
            val_r2, val_loss, val_mae = scores("valid")
            epochs_run = epoch + 1
            history.append({"epoch": epochs_run, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
                            "val_r2": val_r2, "steps": steps, "epoch_steps": epoch_steps,
                            "seconds": t_val - t_epoch, "val_seconds": time.perf_counter() - t_val})
            if out_of_time:
                stopped = "time_budget"
                break
            if not math.isfinite(val_loss):
                raise Diverged(f"the validation loss is {val_loss} after epoch {epochs_run}")
            if on_epoch is not None and on_epoch(epochs_run, val_r2):
                stopped = "stopper"
                break
            if ctrl.end_epoch(val_loss):
                stopped = "early_stopping"
                break
            if time_budget is not None and time.perf_counter() - t0 > time_budget:
                stopped = "time_budget"
                break
        if epochs_run == 0:  # no epoch asked for (or none finished): score the model as it is
            val_r2, val_loss, val_mae = scores("valid")
        test_r2 = scores("test")[0] if len(split.get("test", ())) else float("nan")
    except Diverged as exc:
        stopped, error, test_r2 = "diverged", str(exc), float("nan")
        val_r2 = float("nan")
    return TrainResult(
        val_r2=val_r2, test_r2=test_r2, train_loss=train_loss, val_loss=val_loss, val_mae=val_mae,
        epochs=epochs_run, stopped=stopped, n_params=n_params, train_seconds=time.perf_counter() - t0,
        final_lr=float(optimizer.param_groups[0]["lr"]), steps=steps, device=str(dev),
        amp=str(amp_dtype).replace("torch.", "") if amp_dtype else "off", error=error, history=history,
    )


# ----------------------------------------------------------------------------------------------
# The adbo objective
# ----------------------------------------------------------------------------------------------
_OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def _threads_from_env() -> int | None:
    value = os.environ.get("ADBO_TORCH_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            return None
    return None


class ComboObjective:
    """Train Combo with one configuration and return its validation R2 (to maximize).

    A plain picklable object: Parsl ships it to each worker, which loads the data on its first
    evaluation and keeps it for the rest (``get_dataset``). ``data_dir`` holds the five files
    (downloaded, staged or generated, see ``candle_data.resolve_data``); ``cache_dir`` holds the
    parsed ``.npz``.

    ``time_budget`` (seconds) bounds each evaluation's training: set it below adbo's timeout so the
    objective stops itself and reports what it has (adbo can only abandon a thread).
    ``threads`` sets ``torch.set_num_threads`` in the worker (``$ADBO_TORCH_THREADS`` overrides).
    """

    def __init__(self, data_dir: str | os.PathLike, *, data_label: str | None = None,
                 cache_dir: str | os.PathLike | None = None, epochs: int = 50, time_budget: float | None = None,
                 max_rows: int | None = None, split_seed: int = 2017, valid_split: float = 0.2,
                 test_split: float = 0.2, device: str = "auto", amp: bool | str = False, threads: int | None = None,
                 seed: int = 0, encoder_activation: str = "relu", permanent_dropout: bool = False,
                 eval_batch_size: int = 4096):
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        if time_budget is not None and time_budget <= 0:
            raise ValueError(f"time_budget must be positive, got {time_budget}")
        if max_rows is not None and max_rows < 10:
            raise ValueError(f"max_rows must be at least 10, got {max_rows}")
        make_activation(encoder_activation)
        self.data_dir = str(data_dir)
        self.data_label = data_label or f"dir:{os.path.abspath(self.data_dir)}"
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.epochs = int(epochs)
        self.time_budget = time_budget
        self.max_rows = max_rows
        self.split_seed = int(split_seed)
        self.valid_split = float(valid_split)
        self.test_split = float(test_split)
        self.device = device
        self.amp = amp
        self.threads = threads
        self.seed = int(seed)
        self.encoder_activation = encoder_activation
        self.permanent_dropout = bool(permanent_dropout)
        self.eval_batch_size = int(eval_batch_size)

    def dataset(self) -> ComboDataset:
        return get_dataset(self.data_dir, self.cache_dir)

    def split(self) -> dict[str, np.ndarray]:
        return self.dataset().split(self.split_seed, self.valid_split, self.test_split, self.max_rows)

    def train(self, params: Mapping[str, Any], **overrides: Any) -> TrainResult:
        threads = _threads_from_env() or self.threads
        if threads:
            torch.set_num_threads(int(threads))
        options = dict(epochs=self.epochs, device=self.device, amp=self.amp, time_budget=self.time_budget,
                       seed=self.seed, eval_batch_size=self.eval_batch_size,
                       encoder_activation=self.encoder_activation, permanent_dropout=self.permanent_dropout)
        options.update(overrides)
        return train_and_evaluate(params, self.dataset(), self.split(), **options)

    def __call__(self, params: dict[str, Any], trial: Any = None) -> dict[str, Any]:
        """Validation R2 after training; with a ``trial``, R2 is reported every epoch and training
        ends as soon as the trial says to stop (the run's stopper, ``--stopper``)."""
        on_epoch = None
        if trial is not None:
            def on_epoch(epoch: int, val_r2: float) -> bool:
                trial.report(max(-1.0, val_r2), step=epoch)
                return trial.should_prune()
        try:
            result = self.train(params, on_epoch=on_epoch)
        except _OOM as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return {"objective": float("nan"), "error": f"out of memory: {str(exc).splitlines()[0]}",
                    "stopped": "out_of_memory"}
        meta = result.metadata()
        if not result.ok:
            return {"objective": float("nan"), "error": result.error, **meta}
        return {"objective": max(-1.0, result.val_r2), **meta}

    def adbo_identity(self) -> str:
        parts = [f"data={self.data_label}", f"epochs={self.epochs}", f"split_seed={self.split_seed}",
                 f"valid={self.valid_split}", f"test={self.test_split}"]
        if self.max_rows:
            parts.append(f"max_rows={self.max_rows}")
        if self.encoder_activation != "relu":
            parts.append(f"encoder_activation={self.encoder_activation}")
        if self.permanent_dropout:
            parts.append("permanent_dropout")
        return f"adbo.objectives.candle_combo:ComboObjective({', '.join(parts)})"
