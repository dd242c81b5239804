"""The FLOP estimate builds every model the one way training does (build.build_model), on
the meta device where the model allows it and pre-trained ones from their architecture
alone; every model config and every run of Tables 3 and 4 gets an estimate; the data set
facts it uses live in each conf/dataset file and agree with the data."""

import pytest
from transformers import BertConfig, ViTConfig

from lerac.suite import grid
from lerac.suite.build import build
from lerac.suite.config import CONF_DIR
from lerac.suite.data.facts import dataset_facts
from lerac.suite.flops import flops_on, training_flops
from tests.conftest import compose_config
from tests.test_configs import MODEL_OPTIONS, PRETRAINED, SMALL_MODEL

# A data set of each modality; their facts give the classes and the input size.
DATASET = {"image": "cifar10", "audio": "esc50", "text": "rte"}
NEEDS_REAL_VALUES = {"lstm"}  # packed sequences read the lengths


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub, an empty cache, nothing fetched: only an architecture can be built."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("LERAC_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def tiny_pretrained(option: str, folder) -> list[str]:
    """A local checkpoint folder holding only a small config.json (no weights)."""
    if option == "hf_text":
        config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32)  # fmt: skip
    elif option == "hf_image":
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32)  # fmt: skip
    elif option == "bert_large":
        return ["model.tokenizer.max_length=16"]  # its published architecture, few tokens
    else:
        return []  # cvt13_pretrained: its published architecture
    config.save_pretrained(folder / option)
    return [f"model.pretrained={folder / option}"]


@pytest.mark.parametrize("option", MODEL_OPTIONS)
def test_every_model_config_gets_an_estimate(option, offline):
    extra = SMALL_MODEL.get(option, []) + tiny_pretrained(option, offline)
    modalities = compose_config([f"model={option}", *extra]).model.modalities
    for modality in modalities:
        cfg = compose_config([f"model={option}", f"dataset={DATASET[modality]}", *extra])
        # On the meta device (no memory, no weights) unless the model needs real values.
        real = option in NEEDS_REAL_VALUES
        count = training_flops(cfg) if real else flops_on(cfg, "meta")
        assert count > 0, (option, modality)
    assert set(MODEL_OPTIONS) == set(SMALL_MODEL) | PRETRAINED


def test_the_meta_device_counts_what_the_cpu_counts():
    cfg = compose_config(["model=resnet18", "model.width=4", "dataset=cifar10"])
    assert flops_on(cfg, "meta") == flops_on(cfg, "cpu") > 0


def test_every_run_of_tables_3_and_4_gets_an_estimate(tmp_path, offline):
    out = [f"paths.output_dir={tmp_path / 'out'}"]
    for table, expected in (("table3", 90), ("table4", 60)):
        experiment = grid.load_experiment(table, out)
        runs = grid.enumerate_runs(experiment, out)
        costs = grid.cell_costs(experiment, runs, out)
        hours, unknown = grid.estimate_hours(runs, costs, rate=1e15)
        assert len(runs) == expected and unknown == 0 and hours > 0, costs
        assert {"lstm", "densenet121"} & {model for _, model in costs}


USER_DATA = {"image_folder", "audio_folder", "text_files"}  # known once read


def test_every_data_set_states_its_facts():
    for path in sorted((CONF_DIR / "dataset").glob("*.yaml")):
        cfg = compose_config([f"dataset={path.stem}"])
        assert set(cfg.dataset.facts) >= {"train_examples", "classes"}, path.stem
        if path.stem not in USER_DATA:
            facts = dataset_facts(cfg)
            assert facts.train_examples and facts.classes, path.stem
            assert (facts.image_shape is not None) == (cfg.dataset.modality == "image")


def test_the_digits_facts_are_what_its_loader_gives():
    cfg = compose_config(["dataset=digits"])
    facts, splits = dataset_facts(cfg), build(cfg.dataset)
    assert facts.train_examples == splits.sizes()["train"] + splits.sizes()["val"]
    assert facts.classes == splits.num_classes
    assert facts.image_shape == tuple(splits.train[0].shape[1:])


def test_the_cifar_facts_are_what_its_loader_gives(cifar_root):
    for name in ("cifar10", "cifar100"):
        cfg = compose_config([f"dataset={name}", f"paths.data_dir={cifar_root}"])
        facts, splits = dataset_facts(cfg), build(cfg.dataset)
        assert facts.classes == splits.num_classes
        assert facts.image_shape == tuple(splits.train[0].shape[1:])


def test_an_unknown_fact_is_one_clear_error():
    from lerac.errors import ConfigError

    facts = dataset_facts(compose_config(["dataset=image_folder"]))
    assert facts.train_examples is None and facts.image_shape is None
    with pytest.raises(ConfigError, match="dataset.facts.train_examples="):
        facts.need("train_examples")
    cfg = compose_config(["dataset=image_folder", "dataset.image_size=16"])
    assert dataset_facts(cfg).image_shape == (3, 16, 16)
