"""Training items per second of the R2C preset on a GPU, per coupling method.

Batches are random tensors shaped like VCR with BERT-base features (768-d; question 14, answer 9,
rationale 17 tokens; 6 objects; batch 96 as R2C), so the figure is the model's own cost with
cached features: no JPEG, no ResNet, no text encoder in the loop. One item = its 4 answer pairs and
the rationale passes its coupling needs. Prints JSON, and writes it to $OUT when set.

    python benchmarks/gpu_train_speed.py            # on a machine with CUDA
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vcrnet.config import TrainConfig  # noqa: E402
from vcrnet.train import build, training_loss  # noqa: E402

VCR_TRAIN_QUESTIONS = 212_923
B, D, LQ, LA, LR, K = 96, 768, 14, 9, 17, 6


def random_batch(device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def text(*shape):
        return torch.randn(*shape, D, generator=g)

    def tags(*shape):
        return torch.randint(0, K, shape, generator=g)

    def mask(*shape):
        return torch.ones(*shape, dtype=torch.bool)

    batch = {
        "question": text(B, 4, LQ), "question_tags": tags(B, 4, LQ),
        "question_mask": mask(B, 4, LQ),
        "answers": text(B, 4, LA), "answer_tags": tags(B, 4, LA), "answer_mask": mask(B, 4, LA),
        "rationale_query": text(B, 4, 4, LQ + LA), "rationale_query_tags": tags(B, 4, 4, LQ + LA),
        "rationale_query_mask": mask(B, 4, 4, LQ + LA), "rationales": text(B, 4, 4, LR),
        "rationale_tags": tags(B, 4, 4, LR), "rationale_mask": mask(B, 4, 4, LR),
        "objects": torch.rand(B, K, 2048, generator=g), "object_classes": tags(B, K) + 1,
        "object_mask": mask(B, K), "answer_label": torch.randint(0, 4, (B,), generator=g),
        "rationale_label": torch.randint(0, 4, (B,), generator=g), "index": torch.arange(B)}
    return {k: v.to(device) for k, v in batch.items()}


def training_step(method: str, batch: dict, device: torch.device):
    """One training step of the ``r2c`` preset on ``batch`` (forward, backward, clip, Adam), as a
    function of no arguments."""
    config = TrainConfig(method=method, preset="r2c", num_samples=64)
    model, coupling = build(config, text_dim=D)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-4)

    def step():
        loss, _ = training_loss(model, coupling, batch, 1.0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def items_per_second(method: str, batch: dict, device: torch.device, steps: int = 25) -> float:
    step = training_step(method, batch, device)

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return steps * B / (time.perf_counter() - start)


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    batch = random_batch(device)
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "batch": B, "text_dim": D, "tokens": {"question": LQ, "answer": LA, "rationale": LR},
              "objects": K, "methods": {}}
    for method in ("softmax", "gumbel", "reinforce", "direct16", "teacher"):
        rate = items_per_second(method, batch, device)
        report["methods"][method] = {
            "items_per_s": round(rate, 1),
            "vcr_epoch_minutes": round(VCR_TRAIN_QUESTIONS / rate / 60, 2)}
        print(method, report["methods"][method], flush=True)
    report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_train_speed.json").write_text(text)


if __name__ == "__main__":
    main()
