"""LeRaC in a HuggingFace Trainer: a tiny BERT (random weights, nothing downloaded) on a
synthetic token task, with per-layer rates in the logs and a checkpoint mid-curriculum.

    pip install "lerac[hf]"
    python examples/hf_trainer.py --out /tmp/lerac_hf            # 3 epochs, checkpoint at step 4
    python examples/hf_trainer.py --out /tmp/lerac_hf --resume   # continue from the checkpoint
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from lerac.integrations.hf import LayerRatesCallback, lerac_optimizers


class TokenTask(torch.utils.data.Dataset):
    """Sequences of 8 token ids; the label is whether the first token is even."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 8), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[0] % 2}


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def build(out: str, epochs: int = 3, k_epochs: int = 2, save_steps: int = 4) -> Trainer:
    data = TokenTask()
    model = tiny_bert()
    args = TrainingArguments(
        output_dir=out,
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        weight_decay=0.01,
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
    )
    example = batch_of(data)
    optimizer, scheduler = lerac_optimizers(
        model,
        args,
        example,
        train_batches=len(data) // args.per_device_train_batch_size,
        k_epochs=k_epochs,
        lr_first=1e-3,
        lr_last=1e-7,
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=data,
        optimizers=(optimizer, scheduler),
        callbacks=[LayerRatesCallback()],
    )


def batch_of(data: TokenTask) -> dict[str, torch.Tensor]:
    """A model-input batch (no labels) to find the layers with."""
    items = [data[i] for i in range(2)]
    keys = ("input_ids", "attention_mask")
    return {key: torch.stack([item[key] for item in items]) for key in keys}


def rates_by_step(trainer: Trainer) -> dict[int, dict[str, float]]:
    """Every layer's rate logged at each step."""
    return {
        row["step"]: {key: value for key, value in row.items() if key.startswith("lr/")}
        for row in trainer.state.log_history
        if any(key.startswith("lr/") for key in row)
    }


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the Trainer's output_dir")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint")
    options = parser.parse_args(argv)
    trainer = build(options.out)
    trainer.train(resume_from_checkpoint=True if options.resume else None)
    rates = rates_by_step(trainer)
    for step, row in sorted(rates.items()):  # the input layer's rate and the output layer's
        first, last = row["lr/bert.embeddings.word_embeddings"], row["lr/classifier"]
        print(json.dumps({"step": step, "first_layer": first, "last_layer": last}))
    return rates


if __name__ == "__main__":
    main()
