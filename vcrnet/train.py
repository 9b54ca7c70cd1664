"""Training and evaluation of the joint model on cached features.

``fit`` trains one configuration: Adam, gradient-norm clipping, ReduceLROnPlateau and early
stopping on validation Q->AR, a checkpoint after every epoch that resumes exactly (model,
optimizer, scheduler, RNG state, epoch, the coupling's schedule is a function of the epoch), and
per-epoch metrics in ``metrics.jsonl``. ``evaluate`` scores a split the leaderboard's way and the
paper's way.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vcrnet.config import TrainConfig
from vcrnet.couplings import COUPLINGS, Coupling
from vcrnet.errors import InputError
from vcrnet.features import collate
from vcrnet.leaderboard import score
from vcrnet.model import JointModel

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
EpochCallback = Callable[[dict, Path], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Predictions:
    answer_probs: torch.Tensor  # [N, 4]
    rationale_probs: torch.Tensor  # [N, 4 answers, 4 rationales]: each row conditioned on one
    answer_labels: torch.Tensor  # [N], -1 on test
    rationale_labels: torch.Tensor  # [N]


def build(config: TrainConfig, text_dim: int) -> tuple[JointModel, Coupling]:
    torch.manual_seed(config.seed)
    model = JointModel(config.backbone(), text_dim)
    return model, COUPLINGS[config.method](config.coupling())


def training_loss(model: JointModel, coupling: Coupling, batch: dict,
                  loss_ratio: float) -> tuple[torch.Tensor, dict[str, float]]:
    """``(answer_loss + ratio * rationale_loss) / (1 + ratio)`` plus both object-class losses."""
    answer_logits, answer_aux = model.answer_logits(batch)
    answer_loss = F.cross_entropy(answer_logits, batch["answer_label"])
    scorer = model.rationale_scorer(batch)
    rationale_loss = coupling.rationale_loss(answer_logits, scorer, batch)
    loss = (answer_loss + loss_ratio * rationale_loss) / (1 + loss_ratio)
    loss = loss + answer_aux + scorer.aux_loss
    parts = {"answer_loss": answer_loss.item(), "rationale_loss": rationale_loss.item(),
             "object_loss": (answer_aux + scorer.aux_loss).item()}
    return loss, parts


@torch.no_grad()
def predict(model: JointModel, dataset: Dataset, batch_size: int = 64) -> Predictions:
    """Probabilities for every item, the rationale conditioned on each answer in turn."""
    model.eval()
    device = next(model.parameters()).device
    answers, rationales, a_labels, r_labels = [], [], [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        batch = to_device(batch, device)
        answer_logits, _ = model.answer_logits(batch)
        pair_logits = model.rationale_scorer(batch).all_pairs()
        answers.append(torch.softmax(answer_logits, -1))
        rationales.append(torch.softmax(pair_logits, -1))
        a_labels.append(batch["answer_label"])
        r_labels.append(batch["rationale_label"])
    return Predictions(*(torch.cat(t).cpu() for t in (answers, rationales, a_labels, r_labels)))


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(model: JointModel, dataset: Dataset, batch_size: int = 64) -> dict[str, float]:
    p = predict(model, dataset, batch_size)
    metrics = score(p.answer_probs, p.rationale_probs, p.answer_labels, p.rationale_labels)
    gold = p.rationale_probs[torch.arange(len(p.answer_labels)), p.answer_labels]
    metrics["loss"] = (F.nll_loss(p.answer_probs.clamp_min(1e-12).log(), p.answer_labels)
                       + F.nll_loss(gold.clamp_min(1e-12).log(), p.rationale_labels)).item()
    return metrics


def fit(config: TrainConfig, train_set: Dataset, val_set: Dataset, out: str | Path,
        resume: bool = False, on_epoch: EpochCallback | None = None,
        extra: dict | None = None, device: str = "cpu") -> list[dict]:
    """Train; returns the per-epoch metrics. ``extra`` is stored in the checkpoints (e.g. the
    feature settings ``predict`` needs). Checkpoints always hold CPU tensors."""
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    text_dim = train_set.text_dim
    model, coupling = build(config, text_dim)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=config.lr_factor, patience=config.lr_patience,
        cooldown=config.lr_cooldown)
    state = {"epoch": 0, "best": -1.0, "bad_epochs": 0, "history": []}
    if resume and (out / CHECKPOINT).is_file():
        saved = load_checkpoint(out / CHECKPOINT)
        if saved["config"] != config.to_dict():
            raise InputError(f"{out / CHECKPOINT}: was trained with another configuration")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])  # moves its state to the model's device
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = {k: saved[k] for k in state}
    history = state["history"]
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch, started = state["epoch"], time.perf_counter()
        coupling.set_epoch(epoch)
        metrics = {"epoch": epoch + 1, **coupling.state(),
                   **_train_epoch(model, coupling, train_set, optimizer, config, epoch)}
        metrics.update({f"val_{k}": v for k, v in evaluate(model, val_set).items()})
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_seconds"] = time.perf_counter() - started  # training and validation
        scheduler.step(metrics["val_q2ar"])
        improved = metrics["val_q2ar"] > state["best"]
        state.update(epoch=epoch + 1, best=max(state["best"], metrics["val_q2ar"]),
                     bad_epochs=0 if improved else state["bad_epochs"] + 1)
        history.append(metrics)
        saved = {"config": config.to_dict(), "text_dim": text_dim,
                 "model": {k: v.cpu() for k, v in model.state_dict().items()},
                 "optimizer": _cpu(optimizer.state_dict()), "scheduler": scheduler.state_dict(),
                 "rng": torch.get_rng_state(), "extra": extra or {}, **state,
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        _save_atomic(saved, out / CHECKPOINT)
        if improved:
            _save_atomic(saved, out / BEST)
        _write_metrics(history, out / METRICS)
        if on_epoch is not None:
            on_epoch(metrics, out)
    return history


def _train_epoch(model: JointModel, coupling: Coupling, dataset: Dataset,
                 optimizer: torch.optim.Optimizer, config: TrainConfig,
                 epoch: int) -> dict[str, float]:
    model.train()
    order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, collate_fn=collate,
                        generator=order)
    totals: dict[str, float] = {}
    items, start = 0, time.perf_counter()
    device = next(model.parameters()).device
    for batch in loader:
        batch = to_device(batch, device)
        loss, parts = training_loss(model, coupling, batch, config.loss_ratio)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"epoch {epoch + 1}: the training loss is {loss.item()}")
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        n = len(batch["index"])
        items += n
        for key, value in {"loss": loss.item(), **parts}.items():
            totals[key] = totals.get(key, 0.0) + value * n
    seconds = time.perf_counter() - start
    return {**{f"train_{k}": v / items for k, v in totals.items()},
            "train_items_per_s": items / seconds, "train_seconds": seconds}


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint, loaded with ``weights_only=True``; a bad file is an ``InputError``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt or foreign files alike
        raise InputError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    missing = {"config", "text_dim", "model", "epoch"} - set(saved if isinstance(saved, dict)
                                                             else ())
    if missing:
        raise InputError(f"{path}: not a vcr-study checkpoint (missing {sorted(missing)})")
    return saved


def load_model(path: str | Path) -> tuple[JointModel, TrainConfig, dict]:
    saved = load_checkpoint(path)
    config = TrainConfig.from_dict(saved["config"], where=str(path))
    model, _ = build(config, saved["text_dim"])
    model.load_state_dict(saved["model"])
    return model.eval(), config, saved


def _cpu(state: object) -> object:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_cpu(v) for v in state]
    return state


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_metrics(history: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(m) + "\n" for m in history))
    os.replace(tmp, path)
