"""The paper's recurrent text classifier (4.2): embedding 128, two LSTM layers of 256, a
classifier of two fully connected layers with ReLU.

Padding never reaches the prediction: the sequences are packed by their real lengths
(``attention_mask``), so the classifier reads the second LSTM layer's state at each
text's last real token. The two LSTM layers are separate modules so that LeRaC gives each
its own learning rate (a single two-layer ``nn.LSTM`` would be one layer to it).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence


class LSTMClassifier(nn.Module):
    """Embedding -> stacked LSTM layers -> Linear, ReLU, Linear, on packed sequences.

    Args:
        num_classes: outputs of the classifier.
        vocab_size: the data set's word vocabulary (id 0 is padding).
        embedding_dim, hidden_size, num_layers: 128, 256, 2 in the paper.
        fc_size: width of the classifier's hidden layer (not in the paper: the LSTM width).
    """

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        embedding_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 2,
        fc_size: int = 256,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        sizes = [embedding_dim] + [hidden_size] * num_layers
        self.lstm = nn.ModuleList(
            nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(num_layers)
        )
        self.classifier = nn.Sequential(
            nn.Linear(hidden_size, fc_size), nn.ReLU(), nn.Linear(fc_size, num_classes)
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **_: Tensor) -> Tensor:
        lengths = attention_mask.sum(dim=1).clamp_min(1).cpu()  # an empty text reads [PAD]
        x: Tensor | PackedSequence = pack_padded_sequence(
            self.embedding(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        for lstm in self.lstm:
            x, (hidden, _) = lstm(x)
        # hidden: (1, B, H), the state after each sequence's last real token, batch order.
        return self.classifier(hidden[-1])

    def cbs_sites(self) -> list[tuple[nn.Module, str]]:
        """CBS smooths the word embeddings along the sequence (layout nlc): the input end
        of the network, where CBS smooths a CNN's first feature maps."""
        return [(self.embedding, "nlc")]
