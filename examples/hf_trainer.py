"""LeRaC in a HuggingFace Trainer: a plain Trainer script with two lines changed (marked
``LeRaC 1/2`` and ``LeRaC 2/2``), training a tiny BERT (random weights, nothing
downloaded) on a synthetic token task with every layer's rate in the logs.

    pip install ".[hf]"  # in a checkout (lerac is on no package index)
    python examples/hf_trainer.py --out /tmp/lerac_hf --stop-at 4  # stops after step 4 of 12
    python examples/hf_trainer.py --out /tmp/lerac_hf --resume      # steps 5-12, same rates

The curriculum lasts 2 of the 3 epochs (8 steps); then the arguments' own schedule
(``lr_scheduler_type="linear"``) decays the rate over the 4 steps left. ``--stop-at``
interrupts a run the way a preemption would, after the checkpoint of that step;
``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from lerac.integrations.hf import LeRaCTrainer as Trainer  # LeRaC 1/2

EPOCHS, STEPS_PER_EPOCH = 3, 4  # 32 sequences, 8 a batch


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


class StopAt(TrainerCallback):
    """Ends training after step ``step`` (its checkpoint saved), as an interruption would."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if self.step is not None and state.global_step >= self.step:
            control.should_training_stop = True


def build(out: str, k_epochs: int = 2, stop_at: int | None = None) -> Trainer:
    args = TrainingArguments(
        output_dir=out,
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        logging_steps=1,
        save_strategy="steps",
        save_steps=4,
        report_to="none",
        use_cpu=True,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
    )
    return Trainer(
        model=tiny_bert(),
        args=args,
        train_dataset=TokenTask(),
        callbacks=[StopAt(stop_at)],
        lerac={"k_epochs": k_epochs, "lr_first": 1e-3, "lr_last": 1e-7},  # LeRaC 2/2
    )


def rates_by_step(trainer) -> dict[int, dict[str, float]]:
    """Every layer's rate (``lr/<layer>``) logged at each step."""
    return {
        row["step"]: {key: value for key, value in row.items() if key.startswith("lr/")}
        for row in trainer.state.log_history
        if any(key.startswith("lr/") for key in row)
    }


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the Trainer's output_dir")
    parser.add_argument("--stop-at", type=int, help="stop after this step (an interruption)")
    parser.add_argument("--resume", action="store_true", help="resume from the last checkpoint")
    options = parser.parse_args(argv)
    if options.resume:
        last = get_last_checkpoint(options.out) if options.out else None
        if last is None or int(last.rsplit("-", 1)[1]) >= EPOCHS * STEPS_PER_EPOCH:
            parser.error(
                f"nothing to resume in {options.out}: its last checkpoint ({last}) is not "
                "before the end of training; interrupt a run first with --stop-at N"
            )
    trainer = build(options.out, stop_at=options.stop_at)
    trainer.train(resume_from_checkpoint=True if options.resume else None)
    rates = rates_by_step(trainer)
    for step, row in sorted(rates.items()):  # the input layer's rate and the output layer's
        first, last = row["lr/bert.embeddings.word_embeddings"], row["lr/classifier"]
        print(json.dumps({"step": step, "first_layer": first, "last_layer": last}))
    return rates


if __name__ == "__main__":
    main()
