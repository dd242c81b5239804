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


class Contrastive(nn.Module):
    """Parameters the root owns: a class token added after the stem and a temperature
    used last, at the output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.head = nn.Linear(4, 4)
        self.cls = nn.Parameter(torch.zeros(4))
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.head(self.stem(x) + self.cls) / self.temperature


def test_a_root_parameter_sits_where_the_forward_pass_uses_it():
    model = Contrastive()
    layers = find_layers(model, torch.randn(2, 4))
    assert [layer.name for layer in layers] == ["stem", "cls", "head", "temperature"]
    assert layers[-1].params == (model.temperature,)  # the output's rate, not the input's
    # torchvision's ViT: the class token joins after the patch projection that precedes it.
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(32, 16, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=8)
    names = [layer.name for layer in find_layers(vit, torch.randn(1, 3, 32, 32))]
    assert names[:3] == ["conv_proj", "<root>", "encoder"] and names[-1] == "heads.head"


def test_timm_no_weight_decay_names_get_no_decay():
    import timm

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=2)
    groups = layer_param_groups(model, torch.randn(1, 3, 32, 32), weight_decay=0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert model.no_weight_decay() >= {"cls_token", "pos_embed"}
    assert id(model.cls_token) not in decayed and id(model.pos_embed) not in decayed
    assert id(model.patch_embed.proj.weight) in decayed
    root = next(g for g in groups if g["name"] == "<root>.no_decay")
    assert root["layer_rank"] == 1  # right after the patch projection, where they are used


def test_a_forward_that_takes_one_dict_is_told_to_pass_a_tuple():
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, batch):
            return self.linear(batch["x"])

    batch = {"x": torch.randn(2, 4), "y": torch.zeros(2)}
    with pytest.raises(TypeError, match=r"pass it in a tuple: \(batch,\)"):
        find_layers(DictModel(), batch)
    assert [layer.name for layer in find_layers(DictModel(), (batch,))] == ["linear"]
