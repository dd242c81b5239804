"""Any HuggingFace ``AutoModelForSequenceClassification``, handing the loop plain logits.

``pretrained`` is a hub id (e.g. ``bert-large-uncased``) or a local directory written by
``save_pretrained``; weights load through :func:`lerac.suite.models.hub.from_pretrained`, so an
offline machine without them ends the run with one clear error. The classification head
is new (``num_labels`` = the data set's classes). The tokenizer comes from the same place
(``model.tokenizer.source``, see :mod:`lerac.suite.data.tokenize`). ``model=bert_large`` is
this model with the paper's BERT settings.
"""

from __future__ import annotations

from torch import Tensor, nn

from lerac.errors import ConfigError
from lerac.suite.models.hub import from_pretrained


class HFTextClassifier(nn.Module):
    """A sequence classifier from the HuggingFace hub or a local directory.

    Args:
        num_classes: labels of the new classification head.
        pretrained: hub id or local directory holding the model (and its tokenizer).
        vocab_size: the tokenizer's vocabulary (from the data set), checked against the
            model's embedding table.
        max_length: the longest token sequence the data set stores, checked against the
            model's position embeddings.
    """

    def __init__(
        self,
        num_classes: int,
        pretrained: str,
        vocab_size: int | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoModelForSequenceClassification

        self.model = from_pretrained(
            AutoModelForSequenceClassification,
            pretrained,
            "text classification model",
            num_labels=num_classes,
            ignore_mismatched_sizes=True,  # a checkpoint fine-tuned on other labels
        )
        config = self.model.config
        if vocab_size is not None and vocab_size > config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {vocab_size} tokens but {pretrained} embeds "
                f"{config.vocab_size}; "
                "use the tokenizer saved with the model (model.tokenizer.source)"
            )
        positions = getattr(config, "max_position_embeddings", None)
        if max_length is not None and positions is not None and max_length > positions:
            raise ConfigError(
                f"model.tokenizer.max_length={max_length} exceeds the {positions} positions "
                f"of {pretrained}; lower it"
            )

    def forward(self, **inputs: Tensor) -> Tensor:
        return self.model(**inputs).logits

    def cbs_sites(self) -> list[tuple[nn.Module, str]]:
        """CBS smooths the embedding output along the tokens (layout nlc): the input end of
        the network, as the first conv layers are for CNNs. The base model's full
        ``embeddings`` (words + positions + segments, normalized) where it has one, else
        the word embeddings."""
        base = self.model.base_model
        embeddings = getattr(base, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            embeddings = self.model.get_input_embeddings()
        return [(embeddings, "nlc")]
