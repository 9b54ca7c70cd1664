"""Training and evaluation of the joint model on cached features.

``fit`` trains one configuration: Adam, gradient-norm clipping per module, ReduceLROnPlateau and
early stopping on a **dev** decoding (``TrainConfig.objective``, Q->AR unless a row chooses its
method's own reading; dev: a labelled split carved off train by movie,
``TrainConfig.dev_fraction``: every choice is made on it, so the validation numbers are never
selected on), a checkpoint after every
epoch that resumes exactly (model, optimizer, scheduler, RNG state, epoch; the coupling's schedule
is a function of the position in training), and per-epoch metrics in ``metrics.jsonl``.
``evaluate`` scores a split the leaderboard's way and each method's own way (the table in
``vcrnet.leaderboard``).

The metrics of an epoch (``metrics.jsonl``, one line per epoch):

- ``train_loss``: the optimised objective, ``(answer + ratio * coupling) / (1 + ratio)``, mean
  over the epoch's items; ``train_answer_loss``: the answer module's 4-way cross entropy;
  ``train_coupling_loss``: the coupling's own rationale loss (method-specific: not comparable
  between methods);
- ``train_joint_nll`` and ``val_joint_nll``: one quantity for every method, train and val alike:
  the 16-way joint negative log-likelihood ``-log p(a*) - log p(r* | a*)``, ``p(a)`` the softmax
  of the answer logits, ``p(r | a)`` the softmax of the rationale module's logits given answer a
  (in training with dropout on, as the training loss);
- ``val_q2a``, ``val_qa2r``, ``val_qa2r_pred``, ``val_q2ar``, ``val_qa2r_mixture``,
  ``val_q2ar_mixture``, ``val_qa2r_joint16``, ``val_q2ar_joint16``, ``val_q2a_and_joint16``: the
  decodings, and which of the paper's numbers each one is, in ``vcrnet.leaderboard``;
- ``dev_*``: the same on the dev split; ``dev_q2ar`` is the default ``objective``
  (``OBJECTIVE``);
- these names without their prefix are ``vcrnet.metrics.EVALUATED`` (the decodings,
  ``DECODINGS``, and ``joint_nll``), readable without importing torch;
- ``tau`` (gumbel: the temperature of the epoch's last step), ``lr``, and timings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vcrnet.atomic import replacing, write_text
from vcrnet.config import TrainConfig
from vcrnet.couplings import COUPLINGS, Coupling, factorised_pair_scores
from vcrnet.errors import InputError
from vcrnet.features import CachedVCRDataset, dev_split
from vcrnet.features.batches import Batches, epoch_order, item_sizes, sorted_order
from vcrnet.leaderboard import score, score_joint16, score_mixture
from vcrnet.metrics import OBJECTIVE as OBJECTIVE  # re-exported, as REPORTED
from vcrnet.metrics import REPORTED as REPORTED  # re-exported: vcrnet.train.REPORTED, as before
from vcrnet.model import JointModel
from vcrnet.model.joint import host_answer_labels

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
# what BEST keeps of a checkpoint: the weights and what loading them needs, no optimizer state
# (a third of a checkpoint's size: Adam keeps two tensors per weight)
BEST_KEYS = ("config", "text_dim", "model", "extra", "epoch", "best", "history")
METRICS = "metrics.jsonl"
DEV_ITEMS = "dev_items.json"
MODULES = ("answer", "rationale")  # JointModel's two modules, each clipped on its own
CHECK_EVERY = 50  # training steps between divergence checks (each check is a host sync)
EpochCallback = Callable[[dict, Path], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class Predictions:
    """The model's scores of every item of a split (CPU tensors)."""

    answer_logits: torch.Tensor  # [N, 4]
    pair_logits: torch.Tensor  # [N, 4 answers, 4 rationales]: the rationale module's, per pair
    mixture_logits: torch.Tensor  # [N, 4]: the rationales under the answer mixture
    answer_labels: torch.Tensor  # [N], -1 on test
    rationale_labels: torch.Tensor  # [N]

    @property
    def answer_probs(self) -> torch.Tensor:
        """``[N, 4]``"""
        return torch.softmax(self.answer_logits, -1)

    @property
    def rationale_probs(self) -> torch.Tensor:
        """``[N, 4 answers, 4 rationales]``: each row conditioned on one answer (the CSV's)."""
        return torch.softmax(self.pair_logits, -1)

    @property
    def mixture_probs(self) -> torch.Tensor:
        """``[N, 4]``: the rationales given ``mixed(softmax(answer_logits))``."""
        return torch.softmax(self.mixture_logits, -1)


def build(config: TrainConfig, text_dim: int) -> tuple[JointModel, Coupling]:
    torch.manual_seed(config.seed)
    model = JointModel(config.backbone(), text_dim)
    return model, COUPLINGS[config.method](config.coupling())


def make_optimizer(model: JointModel, config: TrainConfig) -> torch.optim.Adam:
    """R2C's Adam (L2 weight decay), fused into one kernel a step on a GPU; call it after the
    model is on its device."""
    cuda = next(model.parameters()).is_cuda
    return torch.optim.Adam(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=cuda
    )


def training_loss(
    model: JointModel, coupling: Coupling, batch: dict, loss_ratio: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(answer_loss + ratio * coupling_loss) / (1 + ratio)``, and its parts and the joint NLL
    as detached scalar tensors (no host sync)."""
    answer_logits = model.answer_logits(batch)  # [B, 4]
    answer_loss = F.cross_entropy(answer_logits, batch["answer_label"])
    scorer = model.rationale_scorer(batch)
    coupling_loss = coupling.rationale_loss(answer_logits, scorer, batch)
    loss = (answer_loss + loss_ratio * coupling_loss) / (1 + loss_ratio)
    with torch.no_grad():  # -log p(a*) is the answer loss; add -log p(r* | a*)
        gold = scorer.for_answer(host_answer_labels(batch))  # [B, 4 rationales]
        nll = answer_loss + F.cross_entropy(gold, batch["rationale_label"])
    return loss, {
        "answer_loss": answer_loss.detach(),
        "coupling_loss": coupling_loss.detach(),
        "joint_nll": nll,
    }


def joint_nll(
    answer_logits: torch.Tensor,
    gold_pair_logits: torch.Tensor,
    answer_labels: torch.Tensor,
    rationale_labels: torch.Tensor,
) -> torch.Tensor:
    """Mean ``-log p(a*) - log p(r* | a*)``: ``answer_logits [B, 4]``, ``gold_pair_logits
    [B, 4]`` (the rationale logits given the gold answer), labels ``[B]`` -> a scalar."""
    return F.cross_entropy(answer_logits, answer_labels) + F.cross_entropy(
        gold_pair_logits, rationale_labels
    )


@torch.no_grad()
def predict(model: JointModel, dataset: CachedVCRDataset, batch_size: int = 64) -> Predictions:
    """Scores of every item, in the dataset's order: the rationale conditioned on each answer in
    turn, and on the answer mixture. Items of similar length are batched together (less
    padding; the order does not matter to a model in eval mode)."""
    model.eval()
    device = next(model.parameters()).device
    parts: list[list[torch.Tensor]] = [[], [], [], [], [], []]
    for batch in Batches(dataset, sorted_order(item_sizes(dataset), batch_size), device):
        answer_logits = model.answer_logits(batch)
        scorer = model.rationale_scorer(batch)
        mixture = scorer.mixed(torch.softmax(answer_logits, -1))
        for part, t in zip(
            parts,
            (
                answer_logits,
                scorer.all_pairs(),
                mixture,
                batch["answer_label"],
                batch["rationale_label"],
                batch["index"],
            ),
        ):
            part.append(t)
    *scores, index = (torch.cat(part).cpu() for part in parts)
    order = torch.argsort(index)
    return Predictions(*(t[order] for t in scores))


def evaluate(
    model: JointModel,
    dataset: CachedVCRDataset,
    batch_size: int = 64,
    coupling: Coupling | None = None,
) -> dict[str, float]:
    """The metrics of a labelled split, unprefixed (``q2ar``, ``joint_nll``, ...). ``coupling``
    gives the 16-way decoding's pair scores (default: ``log p(a) + log p(r | a)``)."""
    return readings(predict(model, dataset, batch_size), coupling)


def readings(
    p: Predictions,
    coupling: Coupling | None = None,
    labels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """``evaluate``'s metrics of predictions ``p`` against its own labels, or ``labels``
    (``(answer [N], rationale [N])``: a test split's, kept apart from it)."""
    a, r = labels if labels is not None else (p.answer_labels, p.rationale_labels)
    pair_scores = (coupling.pair_scores if coupling is not None else factorised_pair_scores)(
        p.answer_logits, p.pair_logits
    )
    gold = p.pair_logits[torch.arange(len(a)), a]  # [N, 4]
    return {
        **score(p.answer_probs, p.rationale_probs, a, r),
        **score_mixture(p.answer_probs, p.mixture_probs, a, r),
        **score_joint16(p.answer_probs, pair_scores, a, r),
        "joint_nll": joint_nll(p.answer_logits, gold, a, r).item(),
    }


def fit(
    config: TrainConfig,
    train_set: CachedVCRDataset,
    val_set: CachedVCRDataset,
    out: str | Path,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
    extra: dict | None = None,
    device: str = "cpu",
    save_best: bool = True,
) -> list[dict]:
    """Train; returns the per-epoch metrics. ``train_set`` is split into training items and the
    dev items every choice is made on (``dev_split``, whole movies; its movies and annot_ids in
    ``out/dev_items.json``);
    ``val_set`` is evaluated and reported every epoch, never selected on (dev and val in batches
    of ``config.batch_size``, as R2C: no more memory than training). ``extra`` is stored in
    the checkpoints (e.g. the feature settings ``predict`` needs). Checkpoints hold CPU tensors:
    ``out/checkpoint.pt`` after every epoch, and ``out/best.pt`` (the weights, ``BEST_KEYS``)
    at the best epoch on dev unless ``save_best`` is False.

    ``resume`` continues from ``out/checkpoint.pt``. On the CPU a resumed run repeats an
    uninterrupted one bit for bit (tests/vcrnet/test_train.py). On a GPU it is the same run in
    distribution but not bit-exact: cuDNN's LSTM kernels and atomics-based reductions are not
    deterministic, so two uninterrupted GPU runs differ in the last bits too.
    """
    out = Path(out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    math_mode(config.tf32)
    text_dim = train_set.text_dim
    train_set, dev_set = dev_split(train_set, config.dev_fraction, config.dev_seed)
    write_text(out / DEV_ITEMS, json.dumps(dev_record(dev_set)))
    model, coupling = build(config, text_dim)
    model.to(device)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        mode="max",
        factor=config.lr_factor,
        patience=config.lr_patience,
        cooldown=config.lr_cooldown,
    )
    state = {"epoch": 0, "best": -1.0, "bad_epochs": 0, "history": []}
    if resume and (out / CHECKPOINT).is_file():
        saved = load_checkpoint(out / CHECKPOINT)
        # keys added since the checkpoint was written take their defaults (bucket_batches)
        if TrainConfig.from_dict(saved["config"], where=str(out / CHECKPOINT)) != config:
            raise InputError(f"{out / CHECKPOINT}: was trained with another configuration")
        _load_weights(model, saved["model"], out / CHECKPOINT)
        optimizer.load_state_dict(saved["optimizer"])  # moves its state to the model's device
        for group in optimizer.param_groups:  # fused where it runs now, not where it was saved
            group["fused"] = next(model.parameters()).is_cuda
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        state = {k: saved[k] for k in state}
    history, sizes = state["history"], item_sizes(train_set)
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch, started = state["epoch"], time.perf_counter()
        metrics = {
            "epoch": epoch + 1,
            **train_epoch(model, coupling, train_set, optimizer, config, epoch, sizes),
            **coupling.state(),
        }
        for name, dataset in (("dev", dev_set), ("val", val_set)):
            metrics.update(
                {
                    f"{name}_{k}": v
                    for k, v in evaluate(model, dataset, config.batch_size, coupling).items()
                }
            )
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_seconds"] = time.perf_counter() - started  # training and validation
        scheduler.step(metrics[config.objective])
        improved = metrics[config.objective] > state["best"]
        state.update(
            epoch=epoch + 1,
            best=max(state["best"], metrics[config.objective]),
            bad_epochs=0 if improved else state["bad_epochs"] + 1,
        )
        history.append(metrics)
        saved = {
            "config": config.to_dict(),
            "text_dim": text_dim,
            "model": {k: v.cpu() for k, v in model.state_dict().items()},
            "optimizer": _cpu(optimizer.state_dict()),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "extra": extra or {},
            **state,
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        _save_atomic(saved, out / CHECKPOINT)
        if improved and save_best:
            _save_atomic({k: saved[k] for k in BEST_KEYS}, out / BEST)
        _write_metrics(history, out / METRICS)
        if on_epoch is not None:
            on_epoch(metrics, out)
    return history


def math_mode(tf32: bool) -> None:
    """Set the GPU's float32 math explicitly (``TrainConfig.tf32``): TF32 for matmuls and for
    cuDNN (whose own default is on, PyTorch's matmul default off), or neither. The process-wide
    flags, as every benchmark sets them too."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def dev_record(dev_set: CachedVCRDataset) -> dict:
    """What a run's ``dev_items.json`` records of its dev split: how it was carved, its movies
    and its items' annot_ids."""
    return {
        "carved_by": "movie",
        "movies": sorted(set(dev_set.movies().tolist())),
        "annot_ids": dev_set.annot_ids,
    }


def train_epoch(
    model: JointModel,
    coupling: Coupling,
    dataset: CachedVCRDataset,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    epoch: int,
    sizes: np.ndarray | None = None,
) -> dict[str, float]:
    """One epoch over ``dataset`` in ``epoch_order`` (seeded by the run's seed and the epoch;
    ``sizes``: ``item_sizes(dataset)``, computed if not given); the coupling is told each step's
    position. The losses are summed on the device and checked every ``CHECK_EVERY`` steps and
    at the end (a NaN stops the run there): no step waits for the device otherwise."""
    model.train()
    device = next(model.parameters()).device
    batches = Batches(dataset, epoch_batches(dataset, config, epoch, sizes), device)
    totals: dict[str, torch.Tensor] = {}
    items, start = 0, time.perf_counter()
    for step, batch in enumerate(batches):
        coupling.set_position(epoch, step, len(batches))
        loss, parts = train_step(model, coupling, batch, optimizer, config)
        n = len(batch["index"])
        items += n
        for key, value in {"loss": loss.detach(), **parts}.items():
            totals[key] = totals[key] + value * n if key in totals else value * n
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == len(batches):
            _check_finite(totals["loss"], epoch)
    seconds = time.perf_counter() - start
    return {
        **{f"train_{k}": v.item() / items for k, v in totals.items()},
        "train_items_per_s": items / seconds,
        "train_seconds": seconds,
    }


def train_step(
    model: JointModel,
    coupling: Coupling,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step (forward, backward, clip each module, Adam); ``training_loss``'s
    values and each module's gradient norm and clip coefficient (``clip_each_module``)."""
    loss, parts = training_loss(model, coupling, batch, config.loss_ratio)
    optimizer.zero_grad()
    loss.backward()
    parts.update(clip_each_module(model, config.grad_clip))
    optimizer.step()
    return loss, parts


def clip_each_module(model: JointModel, max_norm: float) -> dict[str, torch.Tensor]:
    """Clip the answer module's and the rationale module's gradients each to norm ``max_norm``,
    as R2C trained them, as two models (one clip over both made a module's update depend on the
    other's gradient: the baselines' answer modules, which get no gradient from the rationale
    loss, diverged at the first step where the joint norm passed the clip, docs/fidelity.md).
    Returns each module's norm before clipping and the factor its gradient was scaled by, as
    scalar tensors on the device (no host sync): ``grad_norm_answer``, ``clip_answer``, ..."""
    found = {}
    for name in MODULES:
        norm = torch.nn.utils.clip_grad_norm_(
            getattr(model, f"{name}_module").parameters(), max_norm
        )
        found[f"grad_norm_{name}"] = norm.detach()
        found[f"clip_{name}"] = torch.clamp(max_norm / (norm.detach() + 1e-6), max=1.0)
    return found


def epoch_batches(
    dataset: CachedVCRDataset, config: TrainConfig, epoch: int, sizes: np.ndarray | None = None
) -> list[np.ndarray]:
    """The positions of each batch of training ``epoch`` (0-based), a function of the run's
    seed and the epoch only (a resumed run repeats them)."""
    sizes = item_sizes(dataset) if sizes is None else sizes
    return epoch_order(
        sizes, config.batch_size, config.seed * 100_003 + epoch, config.bucket_batches
    )


def _check_finite(loss_sum: torch.Tensor, epoch: int) -> None:
    value = loss_sum.item()
    if not math.isfinite(value):
        raise TrainingDiverged(f"epoch {epoch + 1}: the training loss is {value}")


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint, loaded with ``weights_only=True``; a bad file, or a field of the wrong
    type, is an ``InputError`` (``FILE: field: problem``) before any model is built."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt or foreign files alike
        raise InputError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    missing = {"config", "text_dim", "model", "epoch"} - set(
        saved if isinstance(saved, dict) else ()
    )
    if missing:
        raise InputError(f"{path}: not a vcr-study checkpoint (missing {sorted(missing)})")
    problem = _field_problem(saved)
    if problem:
        raise InputError(f"{path}: {problem}")
    return saved


def _field_problem(saved: dict) -> str | None:
    """``field: problem`` for the first field of a checkpoint that has the wrong type."""
    text_dim, epoch, model = saved["text_dim"], saved["epoch"], saved["model"]
    if not _is_int(text_dim) or text_dim < 1:
        return f"text_dim: expected a positive int, got {_shown(text_dim)}"
    if not _is_int(epoch) or epoch < 0:
        return f"epoch: expected an int of 0 or more, got {_shown(epoch)}"
    for key in ("config", "extra"):
        if key in saved and not isinstance(saved[key], dict):
            return f"{key}: expected a dict, got {type(saved[key]).__name__}"
    if not isinstance(model, dict):
        return f"model: expected a dict of tensors, got {type(model).__name__}"
    for key, value in model.items():
        if not isinstance(value, torch.Tensor):
            return f"model: {key!r} is not a tensor ({type(value).__name__})"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """A short value as ``repr`` shows it, a long one (a tensor) by its type."""
    text = repr(value)
    return text if len(text) <= 40 and "\n" not in text else type(value).__name__


def load_model(path: str | Path) -> tuple[JointModel, TrainConfig, dict]:
    saved = load_checkpoint(path)
    config = TrainConfig.from_dict(saved["config"], where=str(path))
    model, _ = build(config, saved["text_dim"])
    _load_weights(model, saved["model"], Path(path))
    return model.eval(), config, saved


def _load_weights(model: JointModel, weights: dict, path: Path) -> None:
    """Load a state dict; one that does not fit this model (e.g. from a version that still had
    the object-class head, ``object_classifier``) is an ``InputError`` naming the parts."""
    expected = model.state_dict()
    unknown = sorted({_part(k) for k in weights.keys() - expected.keys()})
    absent = sorted({_part(k) for k in expected.keys() - weights.keys()})
    shapes = sorted(
        k for k in weights.keys() & expected.keys() if weights[k].shape != expected[k].shape
    )
    if unknown or absent or shapes:
        problems = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("unknown parts", unknown),
                ("missing parts", absent),
                ("other shapes", shapes),
            )
            if names
        ]
        raise InputError(
            f"{path}: made by another version of the model ({'; '.join(problems)}): train it again"
        )
    model.load_state_dict(weights)


def _part(key: str) -> str:
    """``answer_module.object_classifier.weight`` -> ``answer_module.object_classifier``"""
    return ".".join(key.split(".")[:2])


def _cpu(state: object) -> object:
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_cpu(v) for v in state]
    return state


def _save_atomic(obj: dict, path: Path) -> None:
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def _write_metrics(history: list[dict], path: Path) -> None:
    write_text(path, "".join(json.dumps(m) + "\n" for m in history))
