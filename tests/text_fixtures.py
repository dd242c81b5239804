"""Text fixtures in the real on-disk layouts, and a tiny BERT saved with save_pretrained."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

WORDS = (
    "the a cat dog sat ran on under mat rug red blue big small house garden river tree "
    "is was not did does who what where when why yes no paris france river bank sun moon"
).split()

# Small enough for the CPU: a few dozen examples, short texts.
N_TRAIN, N_DEV = 40, 12


def sentence(rng: random.Random, n: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, n))).capitalize() + "."


def rows(kind: str, n: int, seed: int) -> list[dict]:
    """Examples in a benchmark's own columns: GLUE TSV or HF for rte/qnli, original or
    SuperGLUE for boolq."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        positive = i % 2 == 0
        if kind == "rte_glue":
            row = {"index": i, "sentence1": sentence(rng), "sentence2": sentence(rng)}
            row["label"] = "entailment" if positive else "not_entailment"
        elif kind == "rte_hf":
            row = {
                "sentence1": sentence(rng),
                "sentence2": sentence(rng),
                "label": 1 - positive,
                "idx": i,
            }
        elif kind == "qnli_glue":
            row = {"index": i, "question": sentence(rng) + "?", "sentence": sentence(rng, 12)}
            row["label"] = "entailment" if positive else "not_entailment"
        elif kind == "qnli_hf":
            row = {
                "question": sentence(rng),
                "sentence": sentence(rng, 12),
                "label": 1 - positive,
                "idx": i,
            }
        elif kind == "boolq_orig":
            row = {
                "question": sentence(rng),
                "title": "t",
                "answer": positive,
                "passage": sentence(rng, 12),
            }
        elif kind == "boolq_superglue":
            row = {
                "question": sentence(rng),
                "passage": sentence(rng, 12),
                "idx": i,
                "label": int(positive),
            }
        elif kind == "plain":  # text_files: string labels, single texts
            row = {"text": sentence(rng), "label": ["pos", "neg", "mixed"][i % 3]}
        else:
            raise ValueError(kind)
        out.append(row)
    return out


def write_table(path: Path, records: list[dict]) -> Path:
    """One split in the format its extension names (csv, tsv, jsonl, parquet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(records)
    ext = path.name.rsplit(".", 1)[-1]
    if ext == "csv":
        frame.to_csv(path, index=False)
    elif ext == "tsv":  # GLUE's TSVs: tab-separated, no quoting
        frame.to_csv(path, sep="\t", index=False, quoting=3, escapechar="\\")
    elif ext == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif ext == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(ext)
    return path


def write_benchmark(root: Path, layout: str) -> Path:
    """A benchmark directory as it is distributed (GLUE TSVs, BoolQ jsonl, HF parquet shards)."""
    layouts = {
        "rte_glue": ("rte_glue", "{}.tsv", "train", "dev"),
        "rte_hf": ("rte_hf", "{}-00000-of-00001.parquet", "train", "validation"),
        "qnli_glue": ("qnli_glue", "{}.tsv", "train", "dev"),
        "qnli_hf": ("qnli_hf", "{}-00000-of-00001.parquet", "train", "validation"),
        "boolq_orig": ("boolq_orig", "{}.jsonl", "train", "dev"),
        "boolq_superglue": ("boolq_superglue", "{}.jsonl", "train", "val"),
    }
    kind, pattern, train, dev = layouts[layout]
    folder = root / layout
    write_table(folder / pattern.format(train), rows(kind, N_TRAIN, 1))
    write_table(folder / pattern.format(dev), rows(kind, N_DEV, 2))
    if layout.endswith("glue"):  # GLUE and SuperGLUE ship a test split without labels: never read
        hidden = [{k: v for k, v in r.items() if k != "label"} for r in rows(kind, 5, 3)]
        write_table(folder / pattern.format("test"), hidden)
    return folder


def write_tiny_model(folder: Path, arch: str = "bert") -> Path:
    """A 2-layer BERT or DistilBERT (hidden 16, 2 heads) with a WordPiece vocabulary trained
    on WORDS, both written with save_pretrained."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator([" ".join(WORDS) + " . ?"] * 3, vocab_size=200, min_frequency=1)
    by_id = sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1])
    vocab = folder / "vocab.txt"
    vocab.write_text("".join(f"{token}\n" for token, _ in by_id))
    if arch == "bert":
        tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=True)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
        model = BertForSequenceClassification(config)
    else:  # no segment ids: the tokenizer gives input_ids and attention_mask only
        tokenizer = DistilBertTokenizer(vocab=str(vocab), do_lower_case=True)
        config = DistilBertConfig(
            vocab_size=len(tokenizer),
            dim=16,
            n_layers=2,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=64,
        )
        model = DistilBertForSequenceClassification(config)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder
