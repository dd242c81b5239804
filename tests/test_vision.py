"""The vision family: Wide-ResNet-50, CvT-13 (scratch and pretrained), any HF image model,
Tiny ImageNet, ImageNet-200 (streamed), image folders and the Table 13 augmentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from lerac.errors import ConfigError, DataNotFoundError
from lerac.layers import find_layers
from lerac.suite.build import build_data
from lerac.suite.config import CONF_DIR
from lerac.suite.data.augment import table13
from lerac.suite.data.image_folder import load_image_folder
from lerac.suite.data.imagenet200 import WNIDS, load_imagenet200, read_wnids
from lerac.suite.data.images import ImageDecodeError
from lerac.suite.data.streaming import StreamingLoader
from lerac.suite.data.tiny_imagenet import load_tiny_imagenet
from lerac.suite.models.hf_image import CvtClassifier, cvt13, pretrained
from lerac.suite.models.hub import PretrainedUnavailable
from lerac.suite.models.resnet import stem
from lerac.suite.models.wide_resnet import wide_resnet50
from lerac.suite.train import train
from tests.conftest import compose_config
from tests.vision_fixtures import image_folder_tree, imagenet_tree, tiny_imagenet_tree, write_image

VISION_MODELS = ["resnet18", "wide_resnet50", "cvt13", "cvt13_pretrained", "hf_image"]
VISION_DATA = ["cifar10", "cifar100", "digits", "tiny_imagenet", "imagenet200", "image_folder"]
REGIMES = sorted(p.stem for p in (CONF_DIR / "regime").glob("*.yaml"))
# A tiny CvT: the real CvT classes and layout (3 stages, conv token embeddings, conv
# projections, a class token in the last stage), a few channels and one block a stage.
# (transformers indexes each stage's drop-path rates by the stage number: depth[i] > i.)
TINY_CVT = dict(embed_dim=[8, 16, 24], num_heads=[1, 2, 3], depth=[1, 2, 3])
WNID3 = ["n01443537", "n01629819", "n01641577"]


def quick(data: Path, cache: Path) -> list[str]:
    """A short CPU run: 2 epochs of one batch, a 1-epoch curriculum."""
    return [
        f"paths.data_dir={data}",
        f"paths.cache_dir={cache}",
        "trainer.max_epochs=2",
        "trainer.batch_size=4",
        "trainer.limit_train_batches=1",
        "trainer.limit_eval_batches=1",
        "trainer.progress=false",
        "trainer.device=cpu",
        "model.table1.lerac_k=1",
        "logger=none",
    ]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return image_folder_tree(tmp_path_factory.mktemp("images"), size=(8, 8))  # tiny: CPU runs


@pytest.fixture(scope="module")
def tiny_cvt_dir(tmp_path_factory) -> Path:
    """A CvT image classifier with 1000 labels saved by save_pretrained, like microsoft/cvt-13."""
    from transformers import CvtConfig, CvtForImageClassification

    torch.manual_seed(0)
    model = CvtForImageClassification(CvtConfig(num_labels=1000, **TINY_CVT))
    path = tmp_path_factory.mktemp("weights") / "tiny-cvt"
    model.save_pretrained(path)
    return path


# Models -------------------------------------------------------------------------------


def test_wide_resnet50_is_torchvisions_with_the_small_input_stem():
    small = wide_resnet50(10, in_channels=1, image_size=32)
    assert sum(p.numel() for p in small.parameters()) == pytest.approx(66.8e6, rel=0.01)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert small.conv1.in_channels == 1 and isinstance(small.maxpool, nn.Identity)
    assert small.layer2[0].conv2.in_channels == 256  # "-2": twice ResNet-50's 128
    # 107 layers for LeRaC: stem conv + bn, 16 bottlenecks x 6, 4 shortcuts x 2, fc.
    assert sum(1 for m in small.modules() if list(m.parameters(recurse=False))) == 107
    conv, pool = stem(3, 64, image_size=96)  # the shared rule above 64 px: ImageNet stem
    assert conv.kernel_size == (7, 7) and isinstance(pool, nn.MaxPool2d)


def test_cvt13_is_the_default_cvt_config_and_returns_logits():
    model = cvt13(10, in_channels=3)
    config = model.model.config
    layout = [list(v) for v in (config.embed_dim, config.depth, config.num_heads)]
    assert layout == [[64, 192, 384], [1, 2, 10], [1, 3, 6]]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(19.6e6, rel=0.01)
    for size in (32, 64):  # CIFAR's and Tiny ImageNet's sizes
        with torch.no_grad():
            logits = model(torch.randn(2, 3, size, size))
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)


def test_cvt_cbs_sites_are_the_token_maps_after_each_conv_embedding():
    model = cvt13(5, in_channels=1, **TINY_CVT)
    sites = model.cbs_sites()
    assert [layout for _, layout in sites] == ["nchw"] * 3
    seen = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.shape)) for m, _ in sites]
    model(torch.randn(2, 1, 32, 32))
    for hook in hooks:
        hook.remove()
    # 32 px -> stride-4 embedding (8x8), then two stride-2 ones (4x4, 2x2); channels first.
    assert seen == [(2, 8, 8, 8), (2, 16, 4, 4), (2, 24, 2, 2)]


def test_pretrained_cvt_loads_a_local_directory_with_a_new_head(tiny_cvt_dir):
    from transformers import CvtForImageClassification

    source = CvtForImageClassification.from_pretrained(tiny_cvt_dir)
    model = pretrained(7, str(tiny_cvt_dir), in_channels=1, image_size=32, resize_to=224)
    assert isinstance(model, CvtClassifier) and model.resize_to == 224
    kept = model.model.cvt.encoder.stages[0].embedding.convolution_embeddings.projection.weight
    assert torch.equal(
        kept, source.cvt.encoder.stages[0].embedding.convolution_embeddings.projection.weight
    )
    head = model.model.classifier
    assert head.weight.shape == (7, 24)  # a new head for 7 classes
    assert torch.all(head.bias == 0) and 0.005 < head.weight.std() < 0.05  # CvT's init, std 0.02
    seen = []
    record = lambda _m, _args, kwargs: seen.append(kwargs["pixel_values"].shape)  # noqa: E731
    hook = model.model.register_forward_pre_hook(record, with_kwargs=True)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    hook.remove()
    assert seen == [(2, 3, 224, 224)]  # grayscale repeated to RGB, resized on the device


def test_pretrained_without_weights_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedUnavailable, match="save_pretrained"):
        pretrained(10, str(tmp_path / "no-such-dir"))
    with pytest.raises(PretrainedUnavailable, match="model.pretrained=weights/cvt-13"):
        pretrained(10, "microsoft/cvt-13")


def test_a_cvt13_pretrained_run_without_weights_ends_with_the_error(tmp_path, folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_config(
        ["model=cvt13_pretrained", "dataset=image_folder", f"dataset.path={folder}"]
        + quick(tmp_path, tmp_path / "cache")
    )
    with pytest.raises(PretrainedUnavailable, match="microsoft/cvt-13"):
        train(cfg, tmp_path / "run")
    # Caught by the config check before anything is built: no run files at all.
    assert not (tmp_path / "run" / "metrics.json").exists()


# The real layouts, narrowed so a CPU step is quick: Wide-ResNet-50's 16 bottlenecks with
# 8-wide inner convs (the full model's 67M weights cost ~5 s a forward pass on a loaded
# 2-core machine, even on 8 px images); CvT's 3 stages at TINY_CVT widths.
NARROW = {
    "wide_resnet50": ["model.width_per_group=8"],
    "cvt13": [f"+model.{key}=[{','.join(map(str, value))}]" for key, value in TINY_CVT.items()],
}


# cvt13_pretrained is hf_image's target with CvT-13's settings: one run covers both (its
# own config runs in the missing-weights test above).
@pytest.mark.parametrize("model", ["wide_resnet50", "cvt13", "hf_image"])
def test_each_vision_model_trains_under_lerac(model, tmp_path, folder, tiny_cvt_dir):
    overrides = [f"model={model}", "dataset=image_folder", f"dataset.path={folder}", "regime=lerac"]
    overrides += NARROW.get(model, [])
    if model in ("cvt13_pretrained", "hf_image"):
        # The tiny saved CvT; 32 px instead of 224 keeps the test quick.
        overrides += [f"model.pretrained={tiny_cvt_dir}", "model.resize_to=32"]
    cfg = compose_config(overrides + quick(tmp_path, tmp_path / "cache"))
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    layers = (tmp_path / "run" / "layers.csv").read_text().splitlines()
    assert len(layers) - 1 == metrics["layers"] > 10
    if model == "wide_resnet50":  # narrowed, not shortened: the full model's 107 layers
        assert metrics["layers"] == 107
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3


def test_model_files_cite_table1_and_pick_its_optimizer_and_schedule():
    rows = {
        "wide_resnet50": ("sgd", "plateau", 1e-1, 1e-8),
        "cvt13": ("adamax", "warmup_cosine", 2e-3, 2e-8),
        "cvt13_pretrained": ("adamax", "warmup_cosine", 5e-4, 5e-10),
    }
    for model, (optimizer, schedule, lr, lr_last) in rows.items():
        cfg = compose_config([f"model={model}"])
        assert (cfg.optimizer.id, cfg.schedule.id) == (optimizer, schedule)
        assert cfg.optimizer.lr == lr and cfg.model.table1.lerac_lr_last == lr_last
    assert compose_config(["model=cvt13_pretrained"]).trainer.max_epochs == 25


def test_every_vision_model_data_set_and_regime_composes():
    # Each model with every regime (data sets in turn) and each data set with every regime
    # (models in turn), in one Hydra context: composing is what costs here.
    cells = [
        (m, VISION_DATA[i % len(VISION_DATA)], r)
        for i, m in enumerate(VISION_MODELS)
        for r in REGIMES
    ]
    cells += [
        (VISION_MODELS[i % len(VISION_MODELS)], d, r)
        for i, d in enumerate(VISION_DATA)
        for r in REGIMES
    ]
    seen = set()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for model, dataset, regime in cells:
            cfg = compose(
                "train", overrides=[f"model={model}", f"dataset={dataset}", f"regime={regime}"]
            )
            assert (cfg.model.id, cfg.dataset.id, cfg.regime.id) == (model, dataset, regime)
            assert "image" in cfg.model.modalities and cfg.dataset.modality == "image"
            OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
            seen |= {(model, regime), (dataset, regime)}
    assert len(seen) == (len(VISION_MODELS) + len(VISION_DATA)) * len(REGIMES)


# Data ---------------------------------------------------------------------------------


def test_tiny_imagenet_reads_the_official_layout(tmp_path):
    wnids = ["n01629819", "n01443537", "n01641577"]  # wnids.txt order, not sorted
    tiny_imagenet_tree(tmp_path, wnids, train_per_class=10)
    splits = load_tiny_imagenet(str(tmp_path), str(tmp_path / "cache"), val_fraction=0.1)
    assert splits.sizes() == {"train": 27, "val": 3, "test": 6}
    assert splits.num_classes == 3 and splits.input_spec == {"in_channels": 3, "image_size": 64}
    assert splits.train[0].dtype == torch.uint8 and splits.train[0].shape[1:] == (3, 64, 64)
    # val_annotations.txt lists val_0..5 for wnids reversed, twice: labels by wnids.txt order.
    assert splits.test[1].tolist() == [2, 1, 0, 2, 1, 0]
    # The grayscale JPEG became 3 equal channels.
    from lerac.suite.data.images import read_image

    gray = read_image(tmp_path / "tiny-imagenet-200/train/n01629819/images/n01629819_0.JPEG")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # Decoded once: the cache file is used the second time (same tensors, files untouched).
    cached = list((tmp_path / "cache").glob("tiny_imagenet-*.pt"))
    assert len(cached) == 1
    again = load_tiny_imagenet(str(tmp_path), str(tmp_path / "cache"))
    assert torch.equal(again.test[0], splits.test[0]) and torch.equal(again.val[0], splits.val[0])


def test_missing_tiny_imagenet_names_the_path_and_the_download(tmp_path):
    with pytest.raises(DataNotFoundError, match="tiny-imagenet-200.zip") as err:
        load_tiny_imagenet(str(tmp_path), str(tmp_path / "cache"))
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in str(err.value)


def test_imagenet200_keeps_the_200_classes_and_streams(tmp_path):
    assert len(read_wnids(WNIDS)) == 200 and len(set(read_wnids(WNIDS))) == 200
    base, keep = imagenet_tree(tmp_path, kept=3, others=2, per_class=5)
    splits = load_imagenet200(
        str(base), image_size=32, resize=36, num_workers=0, wnids=str(tmp_path / "wnids3.txt")
    )
    # Only the listed wnids: 3 x 5 train (10% validation), 3 x 2 val -> test.
    assert splits.sizes() == {"train": 13, "val": 2, "test": 6} and splits.num_classes == 3
    assert all(Path(f).parent.name in keep for f in splits.train[0] + splits.test[0])
    assert splits.test[1].tolist() == [0, 0, 1, 1, 2, 2]
    train, val, test = splits.loaders(4, "cpu", seed=3)
    assert isinstance(train, StreamingLoader) and len(train) == 3  # 13 = 3 x 4 + a lone one
    batches = [(x, y) for x, y in train]
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 32, 32)] * 3
    assert batches[0][0].dtype == torch.float32  # normalized with the ImageNet statistics
    epoch = torch.cat([y for _, y in batches])
    assert len(epoch) == 12 and torch.bincount(epoch, minlength=3).max() <= 5
    # The order is the seed's: a loader restored to the state reproduces the epoch.
    state = train.state_dict()
    next_epoch = [y.tolist() for _, y in train]
    train.load_state_dict(state)
    assert [y.tolist() for _, y in train] == next_epoch
    assert sum(len(y) for _, y in test) == test.num_examples == 6


def test_imagenet200_with_the_full_list_names_a_missing_class(tmp_path):
    base, _ = imagenet_tree(tmp_path, kept=1, others=0, per_class=1)
    with pytest.raises(DataNotFoundError, match=read_wnids(WNIDS)[1]):
        load_imagenet200(str(base), num_workers=0)


def test_a_streamed_imagenet200_run_completes(tmp_path):
    base, _ = imagenet_tree(tmp_path, kept=3, others=1, per_class=6)
    overrides = ["model=resnet18", "model.width=4", "dataset=imagenet200", f"dataset.root={base}"]
    overrides += [f"dataset.wnids={tmp_path / 'wnids3.txt'}", "dataset.num_workers=0"]
    overrides += ["dataset.image_size=32", "dataset.resize=36"]
    metrics = train(
        compose_config(overrides + quick(tmp_path, tmp_path / "cache")), tmp_path / "run"
    )
    assert metrics["status"] == "completed" and metrics["data_sizes"]["test"] == 6


def test_image_folder_reads_classes_sizes_and_channels(tmp_path, folder):
    splits = load_image_folder(str(folder), str(tmp_path / "cache"), val_fraction=0.25)
    assert splits.num_classes == 3 and splits.input_spec == {"in_channels": 3, "image_size": 8}
    assert splits.sizes() == {"train": 18, "val": 6, "test": 9}
    assert splits.test[1].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # cat, dog, fox
    gray = load_image_folder(str(folder), str(tmp_path / "cache"), channels=1, image_size=4)
    assert gray.input_spec == {"in_channels": 1, "image_size": 4} and gray.test[0].shape == (
        9,
        1,
        4,
        4,
    )


def test_image_folder_uses_a_val_folder_when_there_is_one(tmp_path):
    base = image_folder_tree(tmp_path, classes=("a", "b"), per_class=4, val=True)
    splits = load_image_folder(str(base), str(tmp_path / "cache"))
    assert splits.sizes() == {"train": 8, "val": 4, "test": 6}


def test_image_folder_errors_name_the_problem(tmp_path):
    base = image_folder_tree(tmp_path, classes=("a", "b"), per_class=5)
    (base / "test" / "c").mkdir()
    with pytest.raises(ConfigError, match=r"missing in test: none; not in train: \['c'\]"):
        load_image_folder(str(base), str(tmp_path / "cache"))
    (base / "test" / "c").rmdir()
    write_image(base / "train" / "a" / "wide.png", np.random.default_rng(0), size=(20, 12))
    with pytest.raises(ConfigError, match="dataset.image_size"):
        load_image_folder(str(base), str(tmp_path / "cache"))
    assert (
        load_image_folder(str(base), str(tmp_path / "cache"), image_size=12).input_spec[
            "image_size"
        ]
        == 12
    )
    (base / "train" / "b" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageDecodeError, match=str(base / "train" / "b" / "broken.jpg")):
        load_image_folder(str(base), str(tmp_path / "cache"), image_size=12)
    with pytest.raises(DataNotFoundError, match="DIR/train/<class>"):
        load_image_folder(str(tmp_path / "nothing"), str(tmp_path / "cache"))


# Augmentation -------------------------------------------------------------------------


def test_table13_augmentation_changes_images_per_sample_and_keeps_shapes():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    targets = torch.arange(16)
    augmented, same_targets = table13()(images, targets)
    assert augmented.shape == images.shape and augmented.dtype == torch.uint8
    assert torch.equal(same_targets, targets)
    changed = [not torch.equal(a, b) for a, b in zip(augmented, images)]
    assert 0 < sum(changed)  # per-sample draws: some images changed ...
    # ... and every transform on at once changes each image differently.
    everything = table13(1, 30, 1, 1, 1, 1, 1)(images, targets)[0]
    assert all(not torch.equal(a, b) for a, b in zip(everything, images))
    flips = table13(1, 0, 0, 0, 0, 0, 0)(images, targets)[0]
    assert torch.equal(flips, images.flip(-1))
    # A coin per image: with p 0.5 some images are flipped and the others untouched.
    half = table13(0.5, 0, 0, 0, 0, 0, 0)(images, targets)[0]
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(half, images)]
    kept = [torch.equal(a, b) for a, b in zip(half, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    with pytest.raises(ConfigError, match="uint8"):
        table13()(images.float(), targets)


def test_augment_applies_to_training_batches_only(tmp_path, folder):
    cfg = compose_config(
        ["dataset=image_folder", f"dataset.path={folder}", "dataset.augment=true"]
        + quick(tmp_path, tmp_path / "c")
    )
    splits = build_data(cfg)
    assert splits.augment is not None
    train_loader, val_loader, _ = splits.loaders(64, "cpu", seed=0)
    plain = load_image_folder(str(folder), str(tmp_path / "c"))
    assert plain.augment is None and train_loader.augment is not None and val_loader.augment is None
    torch.manual_seed(0)
    x, _ = next(iter(train_loader))
    x_plain, _ = next(iter(plain.loaders(64, "cpu", seed=0)[0]))
    assert x.shape == x_plain.shape and not torch.equal(x, x_plain)
    assert torch.equal(next(iter(val_loader))[0], next(iter(plain.loaders(64, "cpu")[1]))[0])


def test_layers_of_cvt_run_input_to_output():
    model = cvt13(3, **TINY_CVT)
    names = [layer.name for layer in find_layers(model, torch.randn(2, 3, 32, 32))]
    assert names[0] == "model.cvt.encoder.stages.0.embedding.convolution_embeddings.projection"
    assert names[-1] == "model.classifier"


# Any timm model (issue 12) ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("resnet10t", []),  # a CNN
        ("convnext_atto", ["dataset.image_size=32"]),  # a ConvNeXt: 4 stride-2+ stages
        ("vit_tiny_patch16_224", ["+model.patch_size=4"]),  # a ViT: 8 px -> 2x2 patches
    ],
)
def test_timm_models_train_under_lerac(name, options, tmp_path, folder):
    overrides = [
        "model=timm",
        f"model.name={name}",
        "dataset=image_folder",
        f"dataset.path={folder}",
    ]
    metrics = train(
        compose_config(overrides + options + quick(tmp_path, tmp_path / "c")), tmp_path / "run"
    )
    assert metrics["status"] == "completed"
    layers = [
        line.split(",")[1]
        for line in (tmp_path / "run" / "layers.csv").read_text().splitlines()[1:]
    ]
    assert layers[-1].startswith("head") or layers[-1] == "fc"  # the classifier comes last
    # ViT: the root's class token and position embedding join where the forward pass
    # first uses them, after the patch projection (lerac.layers' rule).
    first = {"resnet10t": "conv1.0", "convnext_atto": "stem.0"}
    first["vit_tiny_patch16_224"] = "patch_embed.proj"
    assert layers[0] == first[name]
    assert name != "vit_tiny_patch16_224" or layers[1] == "<root>"


def test_timm_names_wrong_models_sizes_and_missing_weights(tmp_path, monkeypatch):
    from lerac.suite.models.timm_models import timm_model

    with pytest.raises(ConfigError, match="close names: .*convnext_atto"):
        timm_model("convnext_att", 10)
    with pytest.raises(ConfigError, match="cannot take 3x8x8"):
        timm_model("vit_tiny_patch16_224", 10, image_size=8)  # 16 px patches
    # huggingface_hub reads HF_HUB_OFFLINE when imported (transformers already did):
    # set its constant too, or timm would wait for the unreachable hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedUnavailable, match="model.checkpoint=resnet10t.pth"):
        timm_model("resnet10t", 10, pretrained=True)
    # A local weight file: the body is loaded, the 1000-class head replaced.
    import timm

    source = timm.create_model("resnet10t")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = timm_model("resnet10t", 10, pretrained=True, checkpoint=str(tmp_path / "w.pth"))
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert model.fc.out_features == 10


def test_streaming_batches_do_not_depend_on_the_worker_count(tmp_path):
    base, _ = imagenet_tree(tmp_path, kept=3, others=0, per_class=3)
    epochs = {}
    for workers in (0, 2):
        splits = load_imagenet200(
            str(base), 16, 20, num_workers=workers, wnids=str(tmp_path / "wnids3.txt")
        )
        train_loader, val_loader, _ = splits.loaders(2, "cpu", seed=1)
        next(iter(val_loader))  # an abandoned pass (as layer discovery does) is harmless
        epochs[workers] = [(x.sum().item(), y.tolist()) for _ in range(2) for x, y in train_loader]
    assert epochs[0] == epochs[2] and len(epochs[0]) == 2 * 4
