"""Layer discovery: forward order, containers, frozen and never-entered parameters."""

import pytest
import torch
from torch import nn

from lerac.curriculum import LeRaC
from lerac.errors import ConfigError
from lerac.layers import find_layers, layer_param_groups
from lerac.suite.models.resnet import ResNet18


def names(model, x):
    return [layer.name for layer in find_layers(model, x)]


def test_resnet18_layers_run_from_stem_to_classifier():
    model = ResNet18(num_classes=10, in_channels=3, image_size=32, width=8)
    order = names(model, torch.randn(2, 3, 32, 32))
    assert order[:4] == ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1"]
    assert order[-1] == "fc"
    assert len(order) == 41  # 20 convs + 20 batch norms + fc
    stage = [int(n[5]) for n in order if n.startswith("layer")]
    assert stage == sorted(stage)
    # The block computes its shortcut first, so the 1x1 projection precedes conv1 there.
    i = order.index
    assert (
        i("layer2.0.downsample.0") < i("layer2.0.conv1") < i("layer2.0.conv2") < i("layer2.1.conv1")
    )
    # Every trainable parameter is in exactly one layer.
    found = [id(p) for layer in find_layers(model, torch.randn(2, 3, 32, 32)) for p in layer.params]
    assert sorted(found) == sorted(id(p) for p in model.parameters())


class HeadFirst(nn.Module):
    """Registers its classifier before its body, so registration order is wrong."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 3)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.tokens = Tokens()
        self.stem = nn.Linear(4, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        h = self.frozen(self.stem(x)).unsqueeze(1)  # (B, 1, 8)
        h = self.tokens(h)
        h, _ = self.attn(h, h, h)
        return self.head(h.flatten(1)[:, :16])


class Tokens(nn.Module):
    """A container owning a parameter (a class token) beside a child layer."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.mix = nn.Linear(8, 8)

    def forward(self, h):
        return torch.cat([self.cls.expand(len(h), -1, -1), self.mix(h)], dim=1)


def test_order_follows_the_forward_pass_not_registration():
    model = HeadFirst()
    layers = find_layers(model, torch.randn(2, 4))
    assert [layer.name for layer in layers] == [
        "stem",
        "tokens",
        "tokens.mix",
        "attn",
        "attn.out_proj",
        "head",
    ]
    tokens = layers[1]
    assert tokens.params == (model.tokens.cls,)  # the class token joins its container
    assert all(p.requires_grad for layer in layers for p in layer.params)  # frozen layer left out
    assert "frozen" not in [layer.name for layer in layers]


def test_discovery_leaves_the_model_as_it_was():
    model = ResNet18(num_classes=4, in_channels=1, image_size=8, width=4)
    model.train()
    stats = model.bn1.running_mean.clone()
    find_layers(model, torch.randn(5, 1, 8, 8))
    assert model.training and model.bn1.training
    assert torch.equal(model.bn1.running_mean, stats)  # eval mode: no statistics update


def test_any_model_trains_with_lerac_param_groups():
    class TextClassifier(nn.Module):  # an LSTM model, keyword inputs
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.rnn = nn.LSTM(8, 8, num_layers=2, batch_first=True)
            self.out = nn.Linear(8, 2)

        def forward(self, tokens):
            h, _ = self.rnn(self.embed(tokens))
            return self.out(h[:, -1])

    model = TextClassifier()
    batch = {"tokens": torch.randint(0, 20, (4, 6))}
    groups = layer_param_groups(model, batch, eps=1e-7)
    assert [g["name"] for g in groups] == ["embed", "rnn", "out"]
    assert [g["layer_rank"] for g in groups] == [0, 1, 2] and {g["eps"] for g in groups} == {1e-7}
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = LeRaC(opt, total_steps=2, lr_first=1e-3, lr_last=1e-7)
    for _ in range(3):
        nn.functional.cross_entropy(model(**batch), torch.tensor([0, 1, 0, 1])).backward()
        opt.step()
        sched.step()
    assert sched.get_last_lr() == [1e-3] * 3


def test_an_unknown_rate_unit_names_the_argument_or_the_config_key():
    from lerac.engine.regimes import LearningRateCurriculum
    from lerac.engine.released import StepCurriculum
    from lerac.units import rate_units

    with pytest.raises(ConfigError, match=r"^units='layer' is not an option"):
        rate_units(nn.Sequential(), [], "layer")
    with pytest.raises(ConfigError, match=r"^regime\.units='layer' is not an option"):
        LearningRateCurriculum(k=2, lr_first=0.1, lr_last=1e-8, units="layer")
    with pytest.raises(ConfigError, match=r"^regime\.units='layer' is not an option"):
        StepCurriculum(lr_first=0.1, floor=1e-6, units="layer")
