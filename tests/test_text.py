"""Text family: BoolQ/RTE/QNLI layouts, text_files formats, tokenization cache, BERT and LSTM."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from lerac.errors import ConfigError, DataNotFoundError, LeRaCError
from lerac.layers import find_layers
from lerac.suite.build import build_data
from lerac.suite.config import CONF_DIR
from lerac.suite.data import text as text_data
from lerac.suite.data.tokenize import trim_padding
from lerac.suite.models.hf_text import HFTextClassifier
from lerac.suite.models.hub import PretrainedUnavailable
from lerac.suite.models.lstm import LSTMClassifier
from lerac.suite.train import train
from tests.conftest import compose_config
from tests.text_fixtures import N_DEV, N_TRAIN, rows, write_benchmark, write_table, write_tiny_model

TEXT_MODELS = ["bert_large", "hf_text", "lstm"]
TEXT_DATASETS = ["boolq", "qnli", "rte", "text_files"]
REGIMES = sorted(p.stem for p in (CONF_DIR / "regime").glob("*.yaml"))
QUICK = ["trainer.progress=false", "trainer.device=cpu", "logger=none", "model.table1.lerac_k=1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("text")


@pytest.fixture(scope="module")
def tiny_bert(root):
    return write_tiny_model(root / "tiny-bert", "bert")


def read_text_data(cfg):
    """``lerac.suite.train.build_data``, raising an assertion a family's code made where Hydra's
    instantiate wraps it in an InstantiationException (the suite's own errors it unwraps)."""
    try:
        return build_data(cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, (LeRaCError, AssertionError)):
            raise err.__cause__ from None
        raise


def config(root, model, dataset, path, *extra, bert=None):
    overrides = [
        f"model={model}",
        f"dataset={dataset}",
        f"dataset.path={path}",
        f"paths.cache_dir={root / 'cache'}",
        *QUICK,
    ]
    if bert is not None:
        overrides += [f"model.pretrained={bert}", "model.tokenizer.max_length=64"]
    return compose_config(overrides + list(extra))


# -- data ----------------------------------------------------------------------------------

LAYOUTS = {  # layout -> (dataset, label of the first dev row, where label 0 means ...)
    "rte_glue": "rte",
    "rte_hf": "rte",
    "qnli_glue": "qnli",
    "qnli_hf": "qnli",
    "boolq_orig": "boolq",
    "boolq_superglue": "boolq",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_benchmark_layout_loads_with_the_official_validation_split_as_test(root, layout):
    folder = write_benchmark(root, layout)
    splits = read_text_data(config(root, "lstm", LAYOUTS[layout], folder))
    # 10% of train is validation; the official dev/validation file is the test set.
    assert splits.sizes() == {"train": N_TRAIN - 4, "val": 4, "test": N_DEV}
    assert splits.num_classes == 2
    # Even rows are the positive class: entailment (0) for GLUE, true (1) for BoolQ,
    # whether the file spells it as a string, an int or a boolean.
    positive = 1 if layout.startswith("boolq") else 0
    expected = [positive if i % 2 == 0 else 1 - positive for i in range(N_DEV)]
    assert splits.test[1].tolist() == expected
    names = splits.artifacts["labels.txt"].split()
    assert names == (["false", "true"] if positive else ["entailment", "not_entailment"])
    vocab = json.loads(splits.artifacts["tokenizer.json"])["model"]["vocab"]
    words = [w for w in vocab if w not in ("[PAD]", "[UNK]", "[SEP]")]
    assert vocab["[PAD]"] == 0 and words and all(w == w.lower() for w in words)


def test_the_validation_split_is_the_same_for_every_run_seed(root):
    folder = write_benchmark(root, "rte_glue")
    a = read_text_data(config(root, "lstm", "rte", folder, "seed=1"))
    b = read_text_data(
        config(root, "lstm", "rte", folder, "seed=2", "paths.cache_dir=" + str(root / "c2"))
    )
    assert torch.equal(a.val[0]["input_ids"], b.val[0]["input_ids"])
    c = read_text_data(config(root, "lstm", "rte", folder, "dataset.split_seed=5"))
    assert not torch.equal(a.val[0]["input_ids"], c.val[0]["input_ids"])


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "parquet"])
def test_text_files_in_each_format_with_string_labels(root, ext):
    folder = root / f"files_{ext}"
    write_table(folder / f"train.{ext}", rows("plain", 30, 1))
    write_table(folder / f"test.{ext}", rows("plain", 9, 2))
    if ext == "jsonl":  # an explicit validation split replaces the 10% hold-out
        write_table(folder / f"val.{ext}", rows("plain", 6, 3))
    splits = read_text_data(config(root, "lstm", "text_files", folder))
    assert splits.num_classes == 3
    assert splits.artifacts["labels.txt"].split() == ["mixed", "neg", "pos"]
    expected_val = 6 if ext == "jsonl" else 3
    assert splits.sizes() == {"train": 30 if ext == "jsonl" else 27, "val": expected_val, "test": 9}
    assert splits.test[1].tolist() == [[2, 1, 0][i % 3] for i in range(9)]


def test_text_files_with_integer_labels_and_pairs(root):
    folder = root / "pairs"
    train_rows = [{"premise": f"a {i}", "hypothesis": "b", "y": [3, 7][i % 2]} for i in range(20)]
    write_table(folder / "train.csv", train_rows)
    write_table(folder / "test.csv", train_rows[:4])
    splits = read_text_data(
        config(
            root,
            "lstm",
            "text_files",
            folder,
            "dataset.text_column=premise",
            "dataset.text_pair_column=hypothesis",
            "dataset.label_column=y",
        )
    )
    assert splits.artifacts["labels.txt"].split() == ["3", "7"]
    assert splits.test[1].tolist() == [0, 1, 0, 1]
    sep = json.loads(splits.artifacts["tokenizer.json"])["model"]["vocab"]["[SEP]"]
    assert (splits.test[0]["input_ids"] == sep).sum(dim=1).tolist() == [1, 1, 1, 1]


def test_a_missing_column_names_the_columns_found(root):
    folder = root / "missing_column"
    write_table(
        folder / "train.csv", [{"sentence": "x", "label": 0}, {"sentence": "y", "label": 1}] * 5
    )
    write_table(folder / "test.csv", [{"sentence": "x", "label": 0}])
    with pytest.raises(
        ConfigError,
        match=r"no column 'text' \(dataset.text_column\); columns found: sentence, label",
    ):
        read_text_data(config(root, "lstm", "text_files", folder))


def test_a_test_label_unseen_in_training_is_named(root):
    folder = root / "unseen"
    write_table(
        folder / "train.tsv", [{"text": "x", "label": "pos"}, {"text": "y", "label": "neg"}] * 5
    )
    write_table(
        folder / "test.tsv", [{"text": "z", "label": "pos"}, {"text": "w", "label": "neutral"}]
    )
    with pytest.raises(
        ConfigError, match=r"test label 'neutral' is not among the training labels \(neg, pos\)"
    ):
        read_text_data(config(root, "lstm", "text_files", folder))


def test_no_files_and_no_hub_says_where_to_put_them(root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = root / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=rf"no data under {empty} .*dev\|val\|validation"):
        read_text_data(config(root, "lstm", "rte", empty))
    with pytest.raises(
        DataNotFoundError, match=r"train: train, val: val\|validation\|dev, test: test"
    ):
        read_text_data(config(root, "lstm", "text_files", empty))


def test_a_text_data_set_needs_a_text_models_tokenizer(root):
    folder = write_benchmark(root, "rte_glue")
    cfg = compose_config(["dataset=rte", f"dataset.path={folder}"])  # default model: resnet18
    with pytest.raises(ConfigError, match="pick a text model"):
        read_text_data(cfg)


def test_tokenized_splits_are_cached_and_reused(root, monkeypatch):
    folder = write_benchmark(root, "qnli_hf")
    cache = root / "reuse_cache"
    first = read_text_data(config(root, "lstm", "qnli", folder, f"paths.cache_dir={cache}"))
    assert len(list((cache / "text").glob("qnli-word_vocab-*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(text_data, "tokenize_tables", fail)
    for extra in (["seed=3"], ["regime=conventional"]):
        again = read_text_data(
            config(root, "lstm", "qnli", folder, f"paths.cache_dir={cache}", *extra)
        )
        assert torch.equal(again.train[0]["input_ids"], first.train[0]["input_ids"])
    with pytest.raises(AssertionError, match="tokenized again"):  # another max length: new cache
        read_text_data(
            config(
                root,
                "lstm",
                "qnli",
                folder,
                f"paths.cache_dir={cache}",
                "model.tokenizer.max_length=8",
            )
        )


def test_batches_are_trimmed_to_their_own_longest_sequence():
    ids = torch.zeros(3, 10, dtype=torch.int32)
    mask = torch.zeros(3, 10, dtype=torch.int8)
    for row, length in enumerate([2, 5, 3]):
        ids[row, :length] = 7
        mask[row, :length] = 1
    batch = trim_padding({"input_ids": ids, "attention_mask": mask})
    assert batch["input_ids"].shape == (3, 5) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].sum().item() == 10


# -- models --------------------------------------------------------------------------------


def test_padding_does_not_reach_the_lstm_prediction():
    torch.manual_seed(0)
    model = LSTMClassifier(
        num_classes=3, vocab_size=20, embedding_dim=8, hidden_size=8, fc_size=8
    ).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [4, 9, 0, 0, 0]])
    mask = (ids != 0).long()
    padded_ids = torch.cat([ids, torch.zeros(2, 7, dtype=torch.long)], dim=1)
    padded_mask = (padded_ids != 0).long()
    with torch.no_grad():
        short = model(input_ids=ids, attention_mask=mask)
        long = model(input_ids=padded_ids, attention_mask=padded_mask)
        alone = model(input_ids=ids[1:, :2], attention_mask=mask[1:, :2])
    assert torch.allclose(short, long, atol=1e-6) and torch.allclose(short[1:], alone, atol=1e-6)
    assert [m for m, layout in model.cbs_sites()] == [model.embedding]


def test_bert_layers_go_embeddings_encoder_pooler_classifier(tiny_bert):
    model = HFTextClassifier(num_classes=2, pretrained=str(tiny_bert))
    batch = {
        "input_ids": torch.tensor([[2, 10, 11, 3]]),
        "token_type_ids": torch.zeros(1, 4, dtype=torch.long),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
    }
    names = [layer.name for layer in find_layers(model, batch)]
    stages = []  # model.bert.<stage>..., encoder layers by index, then model.classifier
    for name in names:
        parts = name.split(".")
        stage = "classifier" if parts[1] == "classifier" else parts[2]
        stage = f"layer{parts[4]}" if stage == "encoder" else stage
        if not stages or stages[-1] != stage:
            stages.append(stage)
    assert stages == ["embeddings", "layer0", "layer1", "pooler", "classifier"]
    assert names[0] == "model.bert.embeddings.word_embeddings"
    # CBS smooths the embeddings' output, a (batch, tokens, hidden) sequence.
    ((site, layout),) = model.cbs_sites()
    assert site is model.model.bert.embeddings and layout == "nlc"
    assert site(input_ids=batch["input_ids"]).shape == (1, 4, 16)


def test_weights_that_cannot_be_loaded_end_with_a_clear_error(root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable, match="bert-large-uncased.*save_pretrained"):
        HFTextClassifier(num_classes=2, pretrained="bert-large-uncased")
    with pytest.raises(PretrainedUnavailable, match="does not exist"):
        HFTextClassifier(num_classes=2, pretrained=str(root / "no" / "such" / "dir"))


def test_a_max_length_beyond_the_position_embeddings_is_refused(tiny_bert):
    with pytest.raises(ConfigError, match="max_length=512 exceeds the 64 positions"):
        HFTextClassifier(num_classes=2, pretrained=str(tiny_bert), max_length=512)


# -- configs and real runs -------------------------------------------------------------------


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_every_text_model_dataset_and_regime_composes(model):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # once: faster
        for dataset in TEXT_DATASETS:
            for regime in REGIMES:
                cfg = compose("train", [f"model={model}", f"dataset={dataset}", f"regime={regime}"])
                resolved = OmegaConf.to_container(cfg, resolve=True)
                assert "tokenizer" not in resolved["dataset"] and resolved["model"]["tokenizer"]
                assert cfg.dataset.modality == "text" and "text" in cfg.model.modalities
                assert resolved["regime"]["id"] == regime
    cfg = compose_config([f"model={model}"])
    expected = {"bert_large": "adamax", "hf_text": "adamax", "lstm": "adamw"}[model]
    assert cfg.optimizer.id == expected and cfg.optimizer.lr == cfg.model.table1.lr


def test_bert_large_is_the_paper_preset():
    cfg = compose_config(["model=bert_large"])
    assert cfg.model.pretrained == "bert-large-uncased"
    assert cfg.model.tokenizer == {
        "kind": "pretrained",
        "source": "bert-large-uncased",
        "max_length": 512,
    }
    assert (cfg.model.table1.batch_size, cfg.model.table1.lr, cfg.optimizer.id) == (
        10,
        5e-5,
        "adamax",
    )


@pytest.mark.parametrize(
    "model, dataset, regime", [("lstm", "digits", "lerac"), ("resnet18", "rte", "conventional")]
)
def test_a_model_and_data_set_of_different_kinds_fail_before_reading(
    tmp_path, model, dataset, regime
):
    cfg = compose_config([f"model={model}", f"dataset={dataset}", f"regime={regime}", *QUICK])
    with pytest.raises(ConfigError, match="takes .* data but dataset=.* is .* data"):
        train(cfg, tmp_path / "run")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_lstm_trains_on_rte_through_the_entrypoint(root, tmp_path):
    folder = write_benchmark(root, "rte_glue")
    cfg = config(
        root,
        "lstm",
        "rte",
        folder,
        "model.embedding_dim=8",
        "model.hidden_size=8",
        "model.fc_size=8",
        "trainer.batch_size=8",
        "trainer.max_epochs=2",
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["data_sizes"]["test"] == N_DEV
    layers = [r["name"] for r in read_csv(tmp_path / "run" / "layers.csv")]
    assert layers == ["embedding", "lstm.0", "lstm.1", "classifier.0", "classifier.2"]
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert "[SEP]" in saved["model"]["vocab"]
    assert (tmp_path / "run" / "labels.txt").read_text() == "entailment\nnot_entailment\n"
    assert len(read_csv(tmp_path / "run" / "predictions.csv")) == N_DEV


def test_bert_trains_on_boolq_through_the_entrypoint(root, tiny_bert, tmp_path):
    folder = write_benchmark(root, "boolq_orig")
    cfg = config(
        root,
        "bert_large",
        "boolq",
        folder,
        "trainer.batch_size=10",
        "trainer.max_epochs=2",
        bert=tiny_bert,
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["model"] == "bert_large"
    layers = [r["name"] for r in read_csv(tmp_path / "run" / "layers.csv")]
    assert layers[0] == "model.bert.embeddings.word_embeddings" and layers[-1] == "model.classifier"
    assert (tmp_path / "run" / "tokenizer.txt").read_text().strip() == str(tiny_bert)
    lr = read_csv(tmp_path / "run" / "lr_schedule.csv")
    first = {int(r["layer"]): float(r["lr"]) for r in lr if r["step"] == "0"}
    assert first[0] == pytest.approx(5e-5) and first[max(first)] == pytest.approx(5e-8)


def test_any_hf_text_model_trains_on_text_files(root, tmp_path):
    """model=hf_text with another architecture (DistilBERT: no segment ids) on single texts."""
    distilbert = write_tiny_model(root / "tiny-distilbert", "distilbert")
    folder = root / "hf_text_files"
    write_table(folder / "train.csv", rows("plain", 30, 1))
    write_table(folder / "test.csv", rows("plain", 9, 2))
    extra = ["regime=conventional", "trainer.max_epochs=1"]
    cfg = config(root, "hf_text", "text_files", folder, *extra, bert=distilbert)
    splits = read_text_data(cfg)
    assert set(splits.train[0]) == {"input_ids", "attention_mask"}
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["model"] == "hf_text"
    layers = [r["name"] for r in read_csv(tmp_path / "run" / "layers.csv")]
    assert layers[0] == "model.distilbert.embeddings.word_embeddings"
    assert layers[-2:] == ["model.pre_classifier", "model.classifier"]
