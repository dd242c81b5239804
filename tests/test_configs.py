"""Every config in every group composes, carries an id and a _target_, and builds."""

from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lerac.engine.rates import LearningRates
from lerac.engine.settings import TrainerSettings
from lerac.engine.store import run_group
from lerac.errors import ConfigError, LeRaCError
from lerac.layers import find_layers
from lerac.suite.build import build, build_data, build_model, named_parameters_of
from lerac.suite.config import CONF_DIR
from lerac.suite.models.hub import PretrainedUnavailable
from lerac.suite.models.resnet import ResNet18
from lerac.suite.validate import RULES, flatten
from tests.conftest import compose_config

GROUPS = ["model", "dataset", "regime", "optimizer", "schedule", "analysis", "logger", "paths"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_every_group_has_options():
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), group


@pytest.mark.parametrize("group, option", OPTIONS)
def test_option_composes_with_id_and_target(group, option, cifar_root):
    cfg = compose_config([f"{group}={option}", f"paths.data_dir={cifar_root}"])
    node = cfg[group]
    assert node.id == option
    if group != "paths":
        assert "_target_" in node
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "regime").glob("*.yaml")))
def test_every_regime_builds_and_starts_an_optimizer(option):
    regime = build(compose_config([f"regime={option}"]).regime)
    model = ResNet18(num_classes=3, in_channels=1, image_size=8, width=4)
    regime.prepare(model)
    optimizer = torch.optim.SGD(regime.param_groups(find_layers(model, torch.randn(2, 1, 8, 8))))
    for group in optimizer.param_groups:
        group["lr"] = 0.1
    owner = LearningRates(
        optimizer,
        curriculum=regime.curriculum(optimizer, steps_per_epoch=4),
        steps_per_epoch=4,
        max_epochs=2,
    )
    owner.before_step(0)
    rates = [group["lr"] for group in optimizer.param_groups]
    # A curriculum starts some layers below the base rate; plain training and CBS do not.
    curriculum = option not in ("conventional", "cbs")
    assert owner.in_curriculum(0) == curriculum
    assert max(rates) <= 0.1 * (1 + 1e-9) and (min(rates) < 0.1) == curriculum


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml")))
def test_every_optimizer_builds_on_layer_groups(option):
    cfg = compose_config([f"optimizer={option}"])
    make = build(cfg.optimizer, _partial_=True)
    layer = torch.nn.Linear(2, 2)
    opt = make([{"params": [layer.weight]}, {"params": [layer.bias]}])
    assert opt.param_groups[0]["lr"] == cfg.model.table1.lr


# Each model at a small size of its real architecture, with inputs of the kind it takes.
SMALL_MODEL = {
    "resnet18": ["model.width=4"],
    "wide_resnet50": ["model.width_per_group=8"],
    "cvt13": ["+model.embed_dim=[8,16,24]", "+model.num_heads=[1,2,3]", "+model.depth=[1,2,3]"],
    "densenet121": [],
    "septr": ["model.dim=16", "model.heads=2", "model.dim_head=8", "model.mlp_dim=16"],
    "lstm": ["model.embedding_dim=8", "model.hidden_size=8", "model.fc_size=8"],
    "timm": ["model.name=resnet10t"],
}
# These load pretrained weights: offline, without them, each must say how to provide them.
PRETRAINED = {"bert_large", "hf_text", "cvt13_pretrained", "hf_image"}
MODEL_OPTIONS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def example_inputs(modality: str):
    """A batch of two examples and the input_spec a data set of that modality gives."""
    if modality == "text":
        ids = torch.tensor([[2, 5, 7, 9], [2, 4, 3, 0]])
        spec = {"vocab_size": 12, "max_length": 4}
        return {"input_ids": ids, "attention_mask": (ids > 0).long()}, spec
    if modality == "audio":
        return torch.randn(2, 1, 32, 40), {"in_channels": 1, "image_size": [32, 40]}
    return torch.randn(2, 3, 32, 32), {"in_channels": 3, "image_size": 32}


def test_every_model_option_is_covered_here():
    assert set(MODEL_OPTIONS) == set(SMALL_MODEL) | PRETRAINED


@pytest.mark.parametrize("option", MODEL_OPTIONS)
def test_every_model_builds_and_classifies(option, monkeypatch, tmp_path):
    if option in PRETRAINED:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
        cfg = compose_config([f"model={option}", "model.pretrained=org/not-cached"])
        with pytest.raises(PretrainedUnavailable, match="model.pretrained="):
            build_model(cfg.model, 7, example_inputs(cfg.model.modalities[0])[1])
        return
    cfg = compose_config([f"model={option}", *SMALL_MODEL[option]])
    for modality in cfg.model.modalities:
        inputs, spec = example_inputs(modality)
        model = build_model(cfg.model, 7, spec)
        logits = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        assert logits.shape == (2, 7), (option, modality)


def test_a_constructor_is_handed_only_the_input_keys_it_names():
    spec = {"in_channels": 1, "image_size": 32, "vocab_size": 12}
    # DenseNet-121 takes no image size; ResNet-18 does (its stem follows it); neither text.
    assert named_parameters_of("lerac.suite.models.densenet.DenseNet121", **spec) == {
        "in_channels": 1
    }
    assert named_parameters_of("lerac.suite.models.resnet.ResNet18", **spec) == {
        "in_channels": 1,
        "image_size": 32,
    }
    # A catch-all **config is not a name: cvt13 gets no image_size to pass on to CvtConfig.
    assert named_parameters_of("lerac.suite.models.hf_image.cvt13", **spec) == {"in_channels": 1}


def test_a_text_data_set_gets_its_tokenizer_from_the_model_not_from_its_config():
    cfg = compose_config(["model=lstm", "dataset=rte"])
    assert "tokenizer" not in cfg.dataset and cfg.model.tokenizer.kind == "word_vocab"
    offered = {"tokenizer": dict(cfg.model.tokenizer)}
    assert named_parameters_of(cfg.dataset._target_, **offered) == offered
    assert named_parameters_of(compose_config([]).dataset._target_, **offered) == {}


def test_resnet18_stem_follows_the_input_size():
    small = ResNet18(num_classes=5, in_channels=2, image_size=64, width=4)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    large = ResNet18(num_classes=5, in_channels=2, image_size=96, width=4)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, torch.nn.MaxPool2d)
    assert large(torch.randn(2, 2, 96, 96)).shape == (2, 5)
    # The CIFAR stem keeps 32 px images at 32 px into the first stage.
    assert small.layer1(small.conv1(torch.randn(1, 2, 32, 32))).shape[-1] == 32


DATASET_OPTIONS = sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml"))
# Built from files in the shared fixture; the other families' loaders are tested on their
# own fixture trees in tests/test_{vision,text,audio}.py.
BUILT_HERE = {"digits", "cifar10", "cifar100"}


@pytest.mark.parametrize("option", DATASET_OPTIONS)
def test_every_dataset_builds_or_names_its_missing_data(option, cifar_root, tmp_path):
    model = {"text": "lstm", "audio": "densenet121"}.get(
        compose_config([f"dataset={option}"]).dataset.modality, "resnet18"
    )
    data_dir = cifar_root if option in BUILT_HERE else tmp_path / "empty"
    data_dir.mkdir(exist_ok=True)
    overrides = [f"dataset={option}", f"model={model}", f"paths.data_dir={data_dir}"]
    if "path" in compose_config([f"dataset={option}"]).dataset:
        overrides.append(f"dataset.path={data_dir}")
    cfg = compose_config(overrides + [f"paths.cache_dir={tmp_path / 'cache'}"])
    if option in BUILT_HERE:
        splits = build_data(cfg)
        assert splits.num_classes >= 2 and min(splits.sizes().values()) > 0
        return
    with pytest.raises(LeRaCError) as err:
        build_data(cfg)
    assert str(data_dir) in str(err.value)  # the message says where it looked


def test_model_selects_its_table1_optimizer_and_the_command_line_wins():
    cfg = compose_config([])
    assert cfg.optimizer.id == "sgd" and cfg.optimizer.lr == 0.1  # Table 1, ResNet-18
    assert compose_config(["optimizer=adam"]).optimizer.id == "adam"


def test_defaults_run_lerac_on_digits_offline():
    cfg = compose_config([])
    assert (cfg.dataset.id, cfg.model.id, cfg.regime.id) == ("digits", "resnet18", "lerac")
    assert cfg.logger.id == "wandb" and cfg.logger.mode == "offline"
    r = cfg.regime
    assert (r.k, r.lr_first, r.lr_last, r.c, r["update"]) == (7, 0.1, 1e-8, 10, "exponential")


def test_run_directory_is_named_by_key():
    cfg = compose_config(["regime=anti_lerac", "seed=3", "paths.output_dir=out"], hydra_config=True)
    assert cfg.hydra.run.dir == "out/digits_resnet18_anti_lerac_seed3"
    assert cfg.hydra.sweep.subdir == "digits_resnet18_anti_lerac_seed3"
    tagged = compose_config(["tag=k9", "paths.output_dir=out"], hydra_config=True)
    assert Path(tagged.hydra.run.dir).name == "digits_resnet18_lerac_k9_seed0"
    # Seeds of one variant share a group (W&B group, report and plot label).
    assert run_group("digits", "resnet18", "lerac", "k9") == "digits_resnet18_lerac_k9"
    assert run_group("digits", "resnet18", "lerac") == "digits_resnet18_lerac"


def test_demo_experiment():
    cfg = compose_config(["experiment=demo"])
    # Narrow and CPU-only, and the curriculum leaves most of the run to converge in.
    assert cfg.model.width == 8 and cfg.trainer.device == "cpu" and cfg.regime.k == 5
    assert cfg.trainer.max_epochs >= 5 * cfg.regime.k
    assert compose_config(["experiment=demo", "regime=conventional"]).regime.id == "conventional"


def test_every_validation_rule_names_a_key_that_some_config_has():
    """A rule whose key was renamed away would go silent; each must match a real key."""
    keys: set[str] = set()
    for group, option in OPTIONS:
        keys |= set(flatten(OmegaConf.to_container(compose_config([f"{group}={option}"]))))
    for rule in RULES:
        assert any(fnmatch(key, rule.key) for key in keys), rule.key


def test_trainer_settings_share_the_config_rules_and_name_unknown_keys():
    with pytest.raises(ConfigError, match=r"trainer.max_epochs=0 is not valid: it must be a pos"):
        TrainerSettings(max_epochs=0, batch_size=8)
    with pytest.raises(ConfigError, match=r"trainer.device='gpu' is not valid"):
        TrainerSettings(max_epochs=1, batch_size=8, device="gpu")
    with pytest.raises(ConfigError, match=r"trainer.max_epoch is not .*trainer.max_epochs\?"):
        TrainerSettings.from_config({"max_epoch": 3, "batch_size": 8})
    settings = TrainerSettings.from_config(dict(compose_config([]).trainer))
    assert settings.max_epochs == compose_config([]).trainer.max_epochs
