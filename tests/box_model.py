"""A tiny model taught (by a few hundred optimiser steps on CPU) to answer with fixed boxes.

It gives the proposer tests a real model whose output contains boxes, so the pixel mapping, labels and scores are
checked end to end. It is the make-tiny architecture with trained weights, not a mock.
"""

from __future__ import annotations

import torch

from model.processing import MiniGPTv2Processor
from model.synthetic.tiny import make_tiny

REFER_ANSWER = "{<10><20><60><80>}"
DETECTION_ANSWER = "<p>circle</p> {<10><20><60><80>}<delim>{<5><5><30><40>}"
TRAINING_PAIRS = (
    ("[refer] give me the location of the red circle", REFER_ANSWER),
    ("[detection] circle", DETECTION_ANSWER),
)


def _batch(processor: MiniGPTv2Processor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    eos = processor.tokenizer.eos_token_id
    rows = []
    for instruction, answer in TRAINING_PAIRS:
        prompt = processor.prompt_ids(instruction)
        target = [*processor.encode_text(answer), eos]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), eos)
    labels = torch.full((len(rows), length), -100)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, mask, labels


def _random_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Normalised-pixel batches mixing noise, flat colours and smooth gradients, so photos are in distribution."""
    noise = torch.randn(count, 3, 64, 64, generator=generator)
    flat = torch.randn(count, 3, 1, 1, generator=generator).expand(-1, -1, 64, 64)
    ramp = torch.linspace(-1.5, 1.5, 64).view(1, 1, 1, 64) * torch.randn(count, 3, 1, 1, generator=generator)
    kind = torch.randint(0, 3, (count, 1, 1, 1), generator=generator)
    return torch.where(kind == 0, noise, torch.where(kind == 1, flat, ramp + 0.3 * noise))


def train_box_model(max_steps: int = 400, seed: int = 0):
    """→ (model, processor) that answer TRAINING_PAIRS whatever the image, greedy."""
    model, processor = make_tiny(None, seed=seed)
    ids, mask, labels = _batch(processor)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(max_steps):
        pixels = _random_images(ids.shape[0], generator)  # any image: the answer is fixed
        loss = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.005:
            break
    return model.eval(), processor
