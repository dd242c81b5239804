"""The paper's recurrent text classifier (4.2): embedding 128, two LSTM layers of 256, a
classifier of two fully connected layers with ReLU.

Padding never reaches the prediction: the LSTM reads left to right and the classifier
takes the second layer's output at each text's last real token (``attention_mask``), so
the padding after it cannot change it. The batch is not packed: packing needs the lengths
on the host (on a GPU, a wait for the device every step) and breaks torch.compile's
graph; the padded steps cost compute, not accuracy.

The LSTM layers run in float32 outside autocast whatever ``trainer.precision`` says:
under autocast PyTorch runs cuDNN's RNNs in float16, not bfloat16, which would need loss
scaling. The embedding (and CBS's smoothing of it) and the classifier follow the precision.
The two LSTM layers are separate modules so that LeRaC gives each its own learning rate
(a single two-layer ``nn.LSTM`` would be one layer to it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LSTMClassifier(nn.Module):
    """Embedding -> stacked LSTM layers -> Linear, ReLU, Linear, at each text's end.

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
        x = self.embedding(input_ids)
        last = (attention_mask.sum(dim=1) - 1).clamp_min(0)  # an empty text reads [PAD]
        x = self.recurrent(x)
        # The second layer's output after each text's last real token: (B, H).
        states = x.gather(1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)
        return self.classifier(states)

    @torch.compiler.disable
    def recurrent(self, x: Tensor) -> Tensor:
        """The LSTM layers, in float32 outside autocast. Never compiled (Dynamo does not
        trace RNNs; cuDNN runs them either way): torch.compile compiles the embedding and
        the classifier around it as two graphs."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            for lstm in self.lstm:
                x, _ = lstm(x)
        return x

    def cbs_sites(self) -> list[tuple[nn.Module, str]]:
        """CBS smooths the word embeddings along the sequence (layout nlc): the input end
        of the network, where CBS smooths a CNN's first feature maps."""
        return [(self.embedding, "nlc")]
