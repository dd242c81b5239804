"""Text to token ids, the way each text model wants it, stored padded and trimmed per batch.

A text model's config carries a ``tokenizer`` block; the entrypoint hands it to the text
data set (``lerac.suite.train.build_data``), since the model decides how its text is tokenized.
Two kinds:

- ``kind: pretrained``: the tokenizer saved with a HuggingFace model (``source``: hub id
  or local directory), e.g. BERT's lowercasing WordPiece: ``[CLS] a [SEP] b [SEP]``.
- ``kind: word_vocab``: a word-level vocabulary built from the training split with the
  ``tokenizers`` library (lowercased, split on whitespace and punctuation), pairs joined
  as ``a [SEP] b``; unknown words map to ``[UNK]``. Saved with each run (``tokenizer.json``).

Both truncate to ``max_length`` (longest text first). Splits are stored padded to their
longest sequence in compact dtypes, with each example's token count kept on the CPU;
:func:`trim_padding` cuts each batch on the device to its own longest sequence, so short
pairs do not pay for 512 tokens. Under torch.compile the cut is rounded up to a multiple
of 64 tokens (lerac/engine/accel.py), so the compiler sees a few widths, not one per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lerac.engine.counters import on_host
from lerac.errors import ConfigError, first_line

PAD, UNK, SEP = "[PAD]", "[UNK]", "[SEP]"
LENGTHS = "lengths"  # per-example token counts, kept on the CPU by the loaders
UNLIMITED_VOCAB = 2**31 - 1  # the tokenizers trainer keeps 30,000 words unless told otherwise


class WordVocabulary:
    """Word-level vocabulary from the training texts (paper 4.2, LSTM): id 0 is padding."""

    def __init__(
        self,
        max_length: int = 200,
        lowercase: bool = True,
        min_frequency: int = 1,
        vocab_size: int | None = None,
    ) -> None:
        self.max_length = max_length
        self.lowercase = lowercase
        self.min_frequency = min_frequency
        self.vocab_size_limit = vocab_size
        self.tokenizer = None

    def fit(self, texts: Sequence[str], pairs: Sequence[str] | None) -> None:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
        from tokenizers.trainers import WordLevelTrainer

        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if self.lowercase else [])
        tokenizer.normalizer = normalizers.Sequence(steps)
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
        trainer = WordLevelTrainer(
            vocab_size=self.vocab_size_limit or UNLIMITED_VOCAB,
            min_frequency=self.min_frequency,
            special_tokens=[PAD, UNK, SEP],  # PAD first: id 0, the embedding's padding_idx
            show_progress=False,
        )
        tokenizer.train_from_iterator([*texts, *(pairs or [])], trainer)
        sep = tokenizer.token_to_id(SEP)
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A", pair=f"$A {SEP} $B", special_tokens=[(SEP, sep)]
        )
        tokenizer.enable_truncation(self.max_length)
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return 0

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None) -> dict[str, list]:
        batch = list(zip(texts, pairs)) if pairs is not None else list(texts)
        return {"input_ids": [e.ids for e in self.tokenizer.encode_batch(batch)]}

    def artifacts(self) -> dict[str, str]:
        return {"tokenizer.json": self.tokenizer.to_str(pretty=True)}

    def fingerprint(self) -> list[Any]:
        return []  # built from the training split: the data set's own key covers it


class PretrainedTokenizer:
    """The tokenizer saved with a HuggingFace model (BERT: lowercasing WordPiece)."""

    def __init__(self, source: str, max_length: int = 512) -> None:
        self.source = str(source)
        self.max_length = max_length
        self.tokenizer = None

    def fit(self, texts: Sequence[str], pairs: Sequence[str] | None) -> None:
        from transformers import AutoTokenizer

        from lerac.suite.models.hub import from_pretrained

        self.tokenizer = from_pretrained(AutoTokenizer, self.source, "tokenizer")

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None) -> dict[str, list]:
        encoded = self.tokenizer(
            list(texts),
            list(pairs) if pairs is not None else None,
            truncation=True,  # longest_first: the passage gives way before the question
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
        )
        return {k: v for k, v in encoded.items() if k in self.tokenizer.model_input_names}

    def artifacts(self) -> dict[str, str]:
        return {"tokenizer.txt": f"{self.source}\n"}

    def fingerprint(self) -> list[Any]:
        """The tokenizer files of a local directory, so replacing them retokenizes."""
        folder = Path(self.source).expanduser()
        if not folder.is_dir():
            return []
        files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".txt", ".model"))
        return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]


KINDS = {"word_vocab": WordVocabulary, "pretrained": PretrainedTokenizer}


def make_tokenizer(
    spec: dict[str, Any] | None, dataset: str
) -> WordVocabulary | PretrainedTokenizer:
    """The tokenizer a ``model.tokenizer`` block describes."""
    if not spec:
        raise ConfigError(
            f"dataset={dataset} is text and needs the model's tokenizer (model.tokenizer); "
            "pick a text model: model=bert_large, model=lstm or model=hf_text"
        )
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in KINDS:
        raise ConfigError(
            f"model.tokenizer.kind={kind!r} is not one of {', '.join(KINDS)} "
            "(see lerac/suite/data/tokenize.py)"
        )
    try:
        return KINDS[kind](**spec)
    except TypeError as err:
        raise ConfigError(f"model.tokenizer ({kind}): {first_line(err)}") from err


def to_tensors(encoded: dict[str, list[list[int]]], pad_id: int) -> dict[str, Tensor]:
    """Pad every sequence to the split's longest: ids int32, masks and segments int8."""
    lengths = np.fromiter(map(len, encoded["input_ids"]), dtype=np.int64)
    width = max(int(lengths.max(initial=0)), 1)
    mask = np.arange(width) < lengths[:, None]  # row-major: fills each row's first tokens
    out: dict[str, Tensor] = {}
    for name, seqs in encoded.items():
        dtype, fill = (np.int32, pad_id) if name == "input_ids" else (np.int8, 0)
        padded = np.full((len(seqs), width), fill, dtype=dtype)
        padded[mask] = np.fromiter(chain.from_iterable(seqs), dtype=dtype, count=lengths.sum())
        out[name] = torch.from_numpy(padded)
    out["attention_mask"] = torch.from_numpy(mask.astype(np.int8))
    return out


def token_lengths(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each example's token count (``lengths``, int32 on the CPU): ``Splits.host_facts``."""
    return {LENGTHS: inputs["attention_mask"].sum(dim=1, dtype=torch.int32).cpu()}


def trim_padding(inputs: dict[str, Tensor], multiple: int = 1) -> dict[str, Tensor]:
    """Cut a right-padded batch to its longest sequence, rounded up to ``multiple`` tokens
    (at most the stored width), as the int64 tensors models take. The width comes from
    the batch's ``lengths`` when present (CPU counts: no wait for the GPU), else from the
    mask; ``lengths`` does not go on to the model."""
    inputs = dict(inputs)
    lengths = inputs.pop(LENGTHS, None)
    if lengths is None:
        longest = int(inputs["attention_mask"].sum(dim=1).max())  # reads the device
    else:
        with on_host():
            longest = int(lengths.max())
    stored = inputs["attention_mask"].shape[1]
    width = min(-(-max(longest, 1) // multiple) * multiple, stored)
    return {name: t[:, :width].long() for name, t in inputs.items()}
