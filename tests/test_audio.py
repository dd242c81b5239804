"""The audio family: the three layouts, the paper's spectrogram, augmentation, SepTr and
DenseNet-121, and real short runs through the train entrypoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lerac.errors import ConfigError, DataNotFoundError
from lerac.suite.config import CONF_DIR
from lerac.suite.data import spectrogram as spec
from lerac.suite.data.audio import group_split
from lerac.suite.data.audio_augment import build_augment
from lerac.suite.data.audio_folder import load_audio_folder
from lerac.suite.data.crema_d import load_crema_d
from lerac.suite.data.esc50 import load_esc50
from lerac.suite.models.densenet import DenseNet121
from lerac.suite.models.septr import SepTr
from lerac.suite.train import train
from lerac.suite.validate import check_modality
from tests.audio_fixtures import (
    SMALL_SHAPE,
    SMALL_SPECTROGRAM,
    write_audio_folder,
    write_clip,
    write_crema_d,
    write_esc50,
)
from tests.conftest import compose_config

SMALL = dict(n_fft=256, win_length=128, hop_length=128, n_mels=32)
TINY_SEPTR = ["model.dim=16", "model.heads=2", "model.dim_head=8", "model.mlp_dim=16"]
RUN = [
    "trainer.max_epochs=2",
    "trainer.batch_size=8",
    "trainer.limit_train_batches=2",
    "trainer.progress=false",
    "trainer.device=cpu",
    "model.table1.lerac_k=1",
    "logger=none",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine two threads
    per process made DenseNet's convs 30x slower (measured); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """paths.data_dir with ESC-50 and CREMA-D in their default places."""
    root = tmp_path_factory.mktemp("audio")
    write_esc50(root / "ESC-50")
    write_crema_d(root / "CREMA-D")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_audio_folder(tmp_path_factory.mktemp("folder") / "sounds")


def small_esc50(data_dir, tmp_path, **kwargs):
    settings = dict(sample_rate=8000, clip_seconds=0.5, **SMALL)
    return load_esc50(str(data_dir / "ESC-50"), str(tmp_path / "cache"), **settings, **kwargs)


# --- the spectrogram ---------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset, rate, frames", [("crema_d", 16000, 1001), ("esc50", 44100, 1723)]
)
def test_paper_spectrogram_shape_and_range(dataset, rate, frames, tmp_path):
    # The configs' defaults are paper 4.2's: 128 mel bins, hop 64 over 4 s (CREMA-D) or
    # hop 128 over 5 s (ESC-50); a 1 s clip is padded to that length.
    node = compose_config([f"dataset={dataset}"]).dataset
    keys = ("sample_rate", "clip_seconds", "n_fft", "win_length", "hop_length", "n_mels")
    settings = spec.SpectrogramSettings(**{k: node[k] for k in keys})
    assert (settings.n_fft, settings.win_length, settings.sample_rate) == (1024, 512, rate)
    clip = write_clip(tmp_path / "clip.wav", np.random.default_rng(0), 1, 1.0, rate)
    x = spec.compute_spectrograms([clip], settings)
    assert x.shape == (1, 1, 128, frames) == (1, *settings.shape)
    assert x.dtype == torch.float16
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # The padding is silence: the clip's lowest level, 0, after the first second.
    pad_from = int(frames * 1.0 / settings.clip_seconds) + 8
    assert float(x[..., pad_from:].max()) == 0.0 and float(x[..., : frames // 8].min()) < 1


def test_log_mel_follows_its_definition():
    # sqrt of the STFT magnitude (Hamming window), mel filterbank, log, min-max per clip.
    import torchaudio.functional as AF

    s = spec.SpectrogramSettings(8000, 0.25, **SMALL)
    waves = torch.randn(2, s.clip_samples)
    window = torch.hamming_window(128)
    stft = torch.stft(waves, 256, 128, 128, window, center=True, return_complex=True)
    banks = AF.melscale_fbanks(129, 0.0, 4000.0, 32, 8000)
    x = torch.log((stft.abs().sqrt().transpose(1, 2) @ banks).transpose(1, 2) + 1e-6)
    low, high = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
    expected = ((x - low) / (high - low)).unsqueeze(1)
    assert torch.allclose(spec.LogMel(s)(waves), expected, atol=1e-5)


def test_uint8_storage_and_to_unit():
    x = torch.rand(3, 1, 4, 5)
    stored = spec.store(x, "uint8")
    assert stored.dtype == torch.uint8
    assert torch.allclose(spec.to_unit(stored), x, atol=0.5 / 255 + 1e-7)
    assert spec.to_unit(spec.store(x, "float16")).dtype == torch.float32


def test_spectrograms_are_cached_and_recomputed_when_a_file_changes(
    data_dir, tmp_path, monkeypatch
):
    small_esc50(data_dir, tmp_path)
    cache = tmp_path / "cache" / "spectrograms"
    assert len(list(cache.glob("esc50-*.pt"))) == 1
    cached = torch.load(next(cache.glob("esc50-*.pt")))
    assert cached.shape == (60, *SMALL_SHAPE) and cached.dtype == torch.float16

    def refuse(*args, **kwargs):
        raise AssertionError("computed again instead of read from the cache")

    with monkeypatch.context() as m:
        m.setattr(spec, "compute_spectrograms", refuse)
        again = small_esc50(data_dir, tmp_path, fold=4)  # another fold: the same cache
    # Fold 4's test clips are rows of the cached tensor.
    rows = again.test[0].flatten(1)
    assert (rows[:, None] == cached.flatten(1)[None]).all(-1).any(1).all()

    other = small_esc50(data_dir, tmp_path, storage="uint8")  # another setting: a new file
    assert other.train[0].dtype == torch.uint8
    assert len(list(cache.glob("esc50-*.pt"))) == 2
    clip = next((data_dir / "ESC-50" / "audio").glob("*.wav"))
    clip.write_bytes(clip.read_bytes())  # a new modification time: a new file
    small_esc50(data_dir, tmp_path)
    assert len(list(cache.glob("esc50-*.pt"))) == 3


# --- the three layouts -------------------------------------------------------------


def test_esc50_folds_and_validation_by_recording(data_dir, tmp_path):
    seen_test = set()
    for fold in (1, 3):
        splits = small_esc50(data_dir, tmp_path, fold=fold)
        sizes = splits.sizes()
        # 5 folds x 3 classes x 2 recordings x 2 takes; the test fold is one fifth.
        assert sizes == {"train": 44, "val": 4, "test": 12}
        assert splits.num_classes == 3 and splits.input_spec == {
            "in_channels": 1,
            "image_size": (32, 32),
        }
        assert splits.train[0].shape[1:] == SMALL_SHAPE
        test = {tuple(x.flatten().tolist()) for x in splits.test[0]}
        assert not test & seen_test  # each fold tests other clips
        seen_test |= test
        # Both takes of a recording stay together: validation shares no recording with train.
        train = {tuple(x.flatten().tolist()) for x in splits.train[0]}
        val = [tuple(x.flatten().tolist()) for x in splits.val[0]]
        assert not set(val) & train and not set(val) & test
    with pytest.raises(ConfigError, match="dataset.fold=6"):
        small_esc50(data_dir, tmp_path, fold=6)
    with pytest.raises(DataNotFoundError, match="meta/esc50.csv"):
        load_esc50(str(tmp_path / "nowhere"), str(tmp_path / "cache"))


def test_crema_d_split_by_clip_or_speaker(data_dir, tmp_path):
    settings = dict(sample_rate=8000, clip_seconds=0.5, **SMALL)
    root, cache = str(data_dir / "CREMA-D"), str(tmp_path / "cache")
    by_clip = load_crema_d(root, cache, **settings)
    # 6 actors x 2 sentences x 6 emotions = 72 clips: 70/15/15 of them.
    assert by_clip.sizes() == {"train": 50, "val": 11, "test": 11}
    assert by_clip.num_classes == 6 and sorted(set(by_clip.train[1].tolist())) == list(range(6))
    assert (
        load_crema_d(root, cache, split_seed=0, **settings).val[1].tolist()
        == by_clip.val[1].tolist()
    )

    from lerac.suite.data.crema_d import find_clips

    clips, actors = find_clips(root)
    index = group_split(actors, (0.7, 0.15, 0.15), 0)
    speakers = [{actors[i] for i in part.tolist()} for part in index]
    assert not speakers[0] & speakers[1] and not speakers[0] & speakers[2]
    assert not speakers[1] & speakers[2]
    by_speaker = load_crema_d(root, cache, split_by="speaker", **settings)
    assert [len(s) for s in speakers] == [4, 1, 1]
    assert by_speaker.sizes() == {"train": 48, "val": 12, "test": 12}
    with pytest.raises(ConfigError, match="split_by"):
        load_crema_d(root, cache, split_by="actor", **settings)


def test_audio_folder_defaults_follow_the_files(folder, tmp_path):
    splits = load_audio_folder(str(folder), str(tmp_path / "cache"), **SMALL)
    # 19 train clips (one 16 kHz stereo, resampled to the 8 kHz most files have), 10% held
    # out; the longest clip (0.6 s at 8 kHz) sets the length: 1 + 4800 // 128 frames.
    assert splits.sizes() == {"train": 17, "val": 2, "test": 6}
    assert splits.num_classes == 3 and splits.input_spec["image_size"] == (32, 38)
    assert splits.test[1].tolist() == [0, 0, 1, 1, 2, 2]
    capped = load_audio_folder(str(folder), str(tmp_path / "cache"), max_clip_seconds=0.25, **SMALL)
    assert capped.input_spec["image_size"] == (32, 1 + 2000 // 128)


def test_audio_folder_with_val_and_errors(tmp_path):
    root = write_audio_folder(tmp_path / "mine", val=True)
    splits = load_audio_folder(str(root), str(tmp_path / "cache"), sample_rate=16000, **SMALL)
    assert splits.sizes() == {"train": 19, "val": 6, "test": 6}
    (root / "test" / "cat").mkdir()
    with pytest.raises(ConfigError, match="cat"):
        load_audio_folder(str(root), str(tmp_path / "cache"), **SMALL)
    (root / "test" / "cat").rmdir()
    broken = root / "train" / "bird" / "broken.wav"
    broken.write_bytes(b"RIFF but not audio")
    with pytest.raises(spec.AudioDecodeError, match=str(broken)):
        load_audio_folder(str(root), str(tmp_path / "cache"), **SMALL)
    with pytest.raises(ConfigError, match="dataset.path=DIR"):
        load_audio_folder(None, str(tmp_path / "cache"))


def test_a_broken_file_ends_a_run_with_its_path(tmp_path):
    root = write_audio_folder(tmp_path / "mine")
    broken = root / "test" / "rain" / "broken.flac"
    broken.write_bytes(b"fLaC garbage")
    overrides = ["dataset=audio_folder", f"dataset.path={root}", "model=densenet121", *RUN]
    cfg = compose_config(overrides + [f"paths.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(spec.AudioDecodeError, match=f"could not decode {broken}"):
        train(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "failed" and str(broken) in saved["error"]


# --- augmentation ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["noise", "time_shift", "speed", "spec_augment", "mixup"])
def test_each_augmentation_changes_its_input_and_keeps_the_shape(name):
    settings = OmegaConf.to_container(compose_config(["dataset=esc50"]).dataset.augment)
    only = {n: {**options, "p": 1.0 if n == name else 0.0} for n, options in settings.items()}
    only["mixup"]["alpha"] = 1.0  # lam uniform: Beta(0.2, 0.2) often leaves lam within 1e-3 of 1
    augment = build_augment(only, num_classes=4)
    assert len(augment.steps) == 1
    torch.manual_seed(0)
    x = spec.store(torch.rand(6, 1, 32, 40), "float16")
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    out, targets = augment(x, y)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    changed = (out - x.float()).flatten(1).abs().amax(dim=1) > 1e-3
    assert bool(changed.all()), f"{name} left {int((~changed).sum())} of 6 samples unchanged"
    if name == "mixup":  # soft targets: class probabilities that sum to 1
        assert targets.shape == (6, 4) and torch.allclose(targets.sum(1), torch.ones(6))
        assert (targets.argmax(1) == y).float().mean() < 1 or targets.max() < 1
    else:
        assert torch.equal(targets, y)


def test_time_warps_move_content_as_documented():
    from lerac.suite.data.audio_augment import warp_time

    x = torch.zeros(1, 1, 2, 16)
    x[..., 4] = 1.0
    one = torch.ones(1)
    shifted = warp_time(x, one, torch.tensor([0.25]))  # a quarter of 16 frames later
    assert torch.allclose(shifted[..., 8], torch.ones(1, 1, 2))
    assert float(shifted.sum()) == pytest.approx(2.0, abs=1e-5)  # moved, nothing added
    faster = warp_time(torch.ones(1, 1, 2, 16), torch.tensor([2.0]), torch.zeros(1))
    assert float(faster[..., :7].min()) == 1.0 and float(faster[..., 8:].max()) == 0.0


def test_augmentation_acts_per_sample_and_switches_off():
    torch.manual_seed(0)
    augment = build_augment({"noise": {"p": 0.5, "std": 0.1}}, num_classes=2)
    x = torch.rand(200, 1, 4, 4) * 0.5 + 0.25
    changed = (augment(x, torch.zeros(200, dtype=torch.long))[0] != x).flatten(1).any(1)
    assert 70 < int(changed.sum()) < 130  # about half the samples
    off = {"noise": {"p": 0, "std": 0.1}, "mixup": {"p": 0, "alpha": 0.2}}
    assert build_augment(off, 2) is None and build_augment(None, 2) is None
    with pytest.raises(ConfigError, match="unknown"):
        build_augment({"reverb": {"p": 1}}, 2)


# --- the models --------------------------------------------------------------------


def test_septr_parameter_count_at_the_default_size():
    # Per block: pos (129 + 129) x 256 + two transformers of LN 512 + qkv 256 x 3840 +
    # out 1280 x 256 + 256 + LN 512 + MLP 2 x (256 x 256 + 256) = 2,953,216; three
    # blocks, the 1 -> 256 projection (512), the class token (256), a 50-class head.
    model = SepTr(num_classes=50, in_channels=1, image_size=(128, 128))
    assert sum(p.numel() for p in model.parameters()) == 3 * 2_953_216 + 512 + 256 + 12_850


def test_septr_first_transformer_attends_within_one_column_only():
    torch.manual_seed(0)
    model = SepTr(num_classes=3, image_size=(6, 5), dim=16, heads=2, dim_head=8, mlp_dim=16)
    model.eval()
    outputs = []
    hook = model.blocks[0].along_h.register_forward_hook(lambda m, i, o: outputs.append(o))
    x = torch.randn(1, 1, 6, 5)
    other_column, same_column = x.clone(), x.clone()
    other_column[..., 3] += 1.0  # time step 3: another column than 1
    same_column[..., 4, 1] += 1.0  # bin 4 of column 1
    with torch.no_grad():
        for inputs in (x, other_column, same_column):
            model(inputs)
    hook.remove()
    # along_h sees (B * W, H + 1, dim): one sequence per column (time step).
    base, moved, inside = (o.view(1, 5, 7, 16) for o in outputs)
    assert torch.equal(base[:, 1], moved[:, 1])  # column 1 ignores column 3
    assert not torch.allclose(base[:, 3], moved[:, 3])  # column 3 itself changed
    # ... but attention mixes within the column: bin 0 of column 1 sees bin 4.
    assert not torch.allclose(base[:, 1, 1], inside[:, 1, 1])
    assert torch.equal(base[:, 0], inside[:, 0])


def test_septr_cbs_sites_are_the_token_maps():
    model = SepTr(num_classes=3, image_size=(6, 5), dim=16, heads=2, dim_head=8, mlp_dim=16)
    sites = model.cbs_sites()
    assert [layout for _, layout in sites] == ["nhwc"] * 3
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(o.shape)) for m, _ in sites]
    model(torch.randn(2, 1, 6, 5))
    assert shapes == [(2, 6, 5, 16)] * 3
    for h in hooks:
        h.remove()
    only_input = SepTr(3, image_size=(6, 5), dim=16, heads=2, dim_head=8, cbs_where="input")
    assert [m for m, _ in only_input.cbs_sites()] == [only_input.blocks[0].token_map]
    pooled = SepTr(3, image_size=(6, 8), dim=16, heads=2, dim_head=8, down_sample=(2, 4))
    assert pooled.blocks[0].pos_w.shape == (3, 16) and pooled(torch.randn(2, 1, 6, 8)).shape == (
        2,
        3,
    )


def test_densenet121_takes_one_channel_spectrograms():
    model = DenseNet121(num_classes=6, in_channels=1)
    assert model.features.conv0.in_channels == 1 and model.classifier.out_features == 6
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 120  # DenseNet-121: 120 convs + the classifier
    assert sum(m.kernel_size[0] > 1 for m in convs) == 59  # the CBS generic rule's sites
    model.eval()
    assert model(torch.randn(2, 1, 32, 40)).shape == (2, 6)


# --- configs and real runs ---------------------------------------------------------

AUDIO_MODELS = ["septr", "densenet121"]
AUDIO_DATA = ["esc50", "crema_d", "audio_folder"]
REGIMES = sorted(p.stem for p in (CONF_DIR / "regime").glob("*.yaml"))


def test_every_audio_model_dataset_and_regime_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):  # once: faster
        for model in AUDIO_MODELS:
            for dataset in AUDIO_DATA:
                for regime in REGIMES:
                    choice = [f"model={model}", f"dataset={dataset}", f"regime={regime}"]
                    cfg = compose("train", overrides=choice)
                    check_modality(cfg)
                    OmegaConf.to_container(cfg, resolve=True)
                    assert cfg.optimizer.id == "adam" and cfg.optimizer.lr == 1e-4  # Table 1
                    assert cfg.dataset.modality == "audio" and cfg.regime.id == regime
        with pytest.raises(ConfigError, match="model=septr takes audio"):
            check_modality(compose("train", overrides=["model=septr", "dataset=cifar10"]))
        check_modality(compose("train", overrides=["model=densenet121", "dataset=cifar10"]))


def test_table1_rows():
    septr = compose_config(["model=septr"])
    dense = compose_config(["model=densenet121"])
    assert (septr.trainer.batch_size, septr.trainer.max_epochs) == (2, 50)
    assert (dense.trainer.batch_size, dense.trainer.max_epochs) == (64, 50)
    for cfg, last in ((septr, 1e-8), (dense, 5e-8)):
        t = cfg.model.table1
        assert (t.lr, t.cbs_sigma, t.cbs_decay, t.lerac_lr_last) == (1e-4, 0.8, 0.9, last)
        assert 1 <= t.cbs_step <= 3 and 2 <= t.lerac_k <= 5
        assert (cfg.regime.lr_first, cfg.regime.lr_last) == (1e-4, last)


def test_esc50_folds_get_their_own_run_directories():
    # Until the run key carries the fold (README), a tag per fold keeps them apart.
    dirs = {
        compose_config(
            ["dataset=esc50", f"dataset.fold={f}", "tag=fold${dataset.fold}"], hydra_config=True
        ).hydra.run.dir
        for f in (1, 2)
    }
    assert {Path(d).name for d in dirs} == {
        "esc50_resnet18_lerac_fold1_seed0",
        "esc50_resnet18_lerac_fold2_seed0",
    }


def run(tmp_path, data_dir, overrides):
    cfg = compose_config(RUN + SMALL_SPECTROGRAM + [f"paths.data_dir={data_dir}", *overrides])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    return metrics


def test_septr_lerac_run_on_esc50(tmp_path, data_dir):
    metrics = run(tmp_path, data_dir, ["model=septr", "dataset=esc50", *TINY_SEPTR])
    assert (metrics["model"], metrics["dataset"], metrics["epochs"]) == ("septr", "esc50", 2)
    assert metrics["data_sizes"] == {"train": 44, "val": 4, "test": 12}
    layers = (tmp_path / "run" / "layers.csv").read_text().splitlines()
    # The token embedding first, then the root's class tokens where the forward pass first
    # uses them, the head last: input-to-output order.
    names = [line.split(",")[1] for line in layers[1:]]
    assert names[:2] == ["embed", "<root>"] and names[-1] == "head"


def test_densenet121_run_on_crema_d(tmp_path, data_dir):
    overrides = ["model=densenet121", "dataset=crema_d", "trainer.max_epochs=1"]
    overrides += ["regime=conventional", "trainer.limit_eval_batches=1"]
    metrics = run(tmp_path, data_dir, overrides)
    assert metrics["model"] == "densenet121" and metrics["layers"] == 242
    assert metrics["data_sizes"] == {"train": 50, "val": 11, "test": 11}


def test_septr_run_on_an_audio_folder(tmp_path, folder):
    overrides = ["model=septr", "dataset=audio_folder", f"dataset.path={folder}", *TINY_SEPTR]
    overrides += ["model.depth=1", "regime=anti_lerac", "trainer.max_epochs=2"]
    overrides += [o for o in SMALL_SPECTROGRAM if "_seconds" not in o and "rate" not in o]
    cfg = compose_config(RUN + overrides + [f"paths.cache_dir={tmp_path / 'cache'}"])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["dataset"] == "audio_folder"
