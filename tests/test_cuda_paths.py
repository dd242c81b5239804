"""The CUDA paths, proven on the CPU where they can be: backend flags inside fit (cuDNN
autotuning under trainer.deterministic, TF32 per precision), the training device's RNG
state alone in checkpoints, the LSTM outside autocast, text widths from CPU counts and
bucketed under compile, host syncs counted per batch (Table 13, mix-up, the compiled
update), and the counters the GPU check reports them with."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lerac.engine.accel import PAD_MULTIPLE, RECOMPILE_LIMIT, Accelerator
from lerac.engine.batches import Splits
from lerac.engine.checkpoint import Checkpoint, cuda_state_for, rng_state, set_rng_state
from lerac.engine.counters import RecompileCounter, SyncCounter, on_host
from lerac.engine.loop import Trainer
from lerac.engine.optim import fuse_groups
from lerac.engine.settings import TrainerSettings
from lerac.suite.data import augment as table13_steps
from lerac.suite.data.audio_augment import build_augment
from lerac.suite.data.base import text_input
from lerac.suite.data.tokenize import token_lengths, trim_padding
from lerac.suite.models.lstm import LSTMClassifier
from lerac.suite.train import deterministic


@pytest.fixture
def flags():
    """The global backend flags, put back after the test."""
    saved = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.backends.cudnn.benchmark = saved[0]
    torch.backends.cuda.matmul.allow_tf32 = saved[1]
    torch.backends.cudnn.allow_tf32 = saved[2]


def cuda_settings(**options) -> Accelerator:
    settings = TrainerSettings(max_epochs=2, batch_size=8, device="cpu", **options)
    return Accelerator.from_settings(settings, "cuda")  # no GPU needed to set the flags


def test_deterministic_runs_keep_cudnn_autotuning_off_inside_fit(flags):
    torch.backends.cudnn.benchmark = False
    with deterministic(True), cuda_settings(deterministic=True).backend_flags():
        assert not torch.backends.cudnn.benchmark  # was: the fast path turned it back on
    torch.backends.cudnn.benchmark = True  # set by the user: still off when deterministic
    with cuda_settings(deterministic=True).backend_flags():
        assert not torch.backends.cudnn.benchmark
    assert torch.backends.cudnn.benchmark  # restored
    torch.backends.cudnn.benchmark = False
    with cuda_settings().backend_flags():
        assert torch.backends.cudnn.benchmark  # autotuning otherwise, on CUDA


@pytest.mark.parametrize("precision, tf32", [("fp32", False), ("tf32", True), ("bf16", True)])
def test_tf32_is_set_by_the_precision_and_restored(flags, precision, tf32):
    torch.backends.cuda.matmul.allow_tf32 = not tf32
    torch.backends.cudnn.allow_tf32 = not tf32
    with cuda_settings(precision=precision).backend_flags():
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cudnn.allow_tf32 is tf32
    assert torch.backends.cuda.matmul.allow_tf32 is not tf32
    assert torch.backends.cudnn.allow_tf32 is not tf32


def test_compiling_pads_text_widths_and_raises_the_recompile_limit_for_the_run():
    import torch._dynamo

    before = torch._dynamo.config.recompile_limit
    assert cuda_settings().pad_multiple == 1
    compiled = cuda_settings(compile="eager")
    assert compiled.pad_multiple == PAD_MULTIPLE
    with compiled.backend_flags():
        assert torch._dynamo.config.recompile_limit == max(RECOMPILE_LIMIT, before)
    assert torch._dynamo.config.recompile_limit == before


# -- the training device's RNG state ------------------------------------------------------------


@pytest.fixture
def one_gpu(monkeypatch):
    """torch.cuda as a process that sees one GPU sees it; records the states it is handed."""
    calls = []

    def set_state(state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 1:
            raise IndexError(f"no CUDA device {index}: this process sees one")
        calls.append(state)

    seven = torch.full((4,), 7, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(
        torch.cuda,
        "set_rng_state_all",
        lambda states: [set_state(s, i) for i, s in enumerate(states)],
    )
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": seven)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [seven])
    return calls


def test_a_checkpoint_of_two_cuda_states_resumes_on_one_gpu(tmp_path, one_gpu):
    states = [torch.full((4,), 1, dtype=torch.uint8), torch.full((4,), 2, dtype=torch.uint8)]
    saved = rng_state("cpu") | {"cuda": states}  # as a process that saw two GPUs wrote it
    Checkpoint(tmp_path).save({"rng": saved, "progress": {"epoch": 1}})
    set_rng_state(Checkpoint(tmp_path).load()["rng"], "cuda:0")
    assert len(one_gpu) == 1 and torch.equal(one_gpu[0], states[0])  # only the device's
    assert [len(rng_state(d)["cuda"]) for d in ("cpu", "cuda:0")] == [0, 1]
    set_rng_state(saved, "cpu")  # a CPU run ignores CUDA states
    assert len(one_gpu) == 1


def test_the_saved_cuda_state_is_the_training_devices():
    states = [torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)]
    assert cuda_state_for(states, "cpu") is None and cuda_state_for([], "cuda") is None
    assert torch.equal(cuda_state_for(states, "cuda"), states[0])
    assert torch.equal(cuda_state_for(states, "cuda:2"), states[2])
    assert torch.equal(cuda_state_for(states[:1], "cuda:2"), states[0])  # this version's
    assert torch.equal(cuda_state_for(states, "cuda:5"), states[0])  # fewer GPUs now


# -- the LSTM, text widths, recompiles ----------------------------------------------------------


def test_the_lstm_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = LSTMClassifier(3, 20, embedding_dim=8, hidden_size=8, fc_size=8)
    seen = []
    for lstm in model.lstm:
        lstm.register_forward_hook(lambda _m, _i, out: seen.append(out[0].dtype))
    ids = torch.tensor([[5, 6, 7, 0], [4, 9, 0, 0]])
    mask = (ids != 0).long()
    with Accelerator("cpu", precision="bf16").autocast():
        bf16 = model(input_ids=ids, attention_mask=mask)
    assert seen == [torch.float32, torch.float32]  # autocast would run them in bf16/fp16
    torch.testing.assert_close(
        bf16.float(), model(input_ids=ids, attention_mask=mask), atol=0.05, rtol=0.05
    )


def text_splits(n: int = 48, width: int = 40, vocab: int = 50) -> Splits:
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(2, width + 1, (n,), generator=generator)
    mask = torch.arange(width) < lengths[:, None]
    ids = torch.randint(3, vocab, (n, width), generator=generator, dtype=torch.int32) * mask
    data = ({"input_ids": ids, "attention_mask": mask.to(torch.int8)}, lengths % 2)
    return Splits(
        data, data, data, 2, text_input(vocab, width), trim=trim_padding, host_facts=token_lengths
    )


@pytest.mark.parametrize("multiple", [1, 16])
def test_text_batches_are_cut_from_cpu_counts_without_reading_the_device(multiple):
    splits = text_splits()
    train, val, _ = splits.loaders(8, "cpu", seed=0, pad_multiple=multiple)
    with SyncCounter("cpu") as syncs:
        batches = [inputs for loader in (train, val) for inputs, _ in loader]
    assert syncs.total == 0, syncs.sites  # was: int(mask.sum(1).max()) per batch
    for inputs in batches:
        assert set(inputs) == {"input_ids", "attention_mask"}  # the counts stay behind
        longest = int(inputs["attention_mask"].sum(dim=1).max())
        width = inputs["input_ids"].shape[1]
        assert width == min(-(-longest // multiple) * multiple, 40)


def compiled_widths(multiple: int) -> tuple[set[int], list[str]]:
    """Widths a compiled LSTM meets over one epoch, and the recompiles a new width caused
    (Dynamo told to specialise every width, as inductor's LSTM backward does)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = LSTMClassifier(2, 50, embedding_dim=4, hidden_size=4, fc_size=4)
    model.compile(backend="eager")
    loader = text_splits().loaders(6, "cpu", seed=0, pad_multiple=multiple)[0]
    widths = set()
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False), RecompileCounter() as seen:
        for inputs, _ in loader:
            widths.add(inputs["input_ids"].shape[1])
            model(**inputs).sum().backward()
    return widths, [r for r in seen.reasons if "size mismatch" in r]


def test_under_compile_text_widths_are_bucketed_so_a_new_width_does_not_recompile():
    widths, recompiles = compiled_widths(1)
    assert len(widths) > 2 and len(recompiles) >= len(widths) - 1  # one per width
    widths, recompiles = compiled_widths(PAD_MULTIPLE)
    assert widths == {40} and recompiles == []  # one bucket: every batch padded to it
    settings = TrainerSettings(max_epochs=1, batch_size=6, device="cpu", compile="eager")
    assert Trainer(settings).accel.pad_multiple == PAD_MULTIPLE  # what fit hands the loaders


# -- host syncs per batch -------------------------------------------------------------------------


STEPS = ["flipped", "solarized", "rotated", "blurred", "sharpened", "autocontrasted"]


@pytest.mark.parametrize("name", STEPS)
def test_each_table13_step_is_torchvisions_for_a_whole_batch(name):
    from torchvision.transforms.v2 import functional as tv

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 12, 14), dtype=torch.uint8, generator=generator)
    images[2] = 9  # a flat image: auto-contrast leaves it
    angles = torch.tensor([-15.0, -7.5, 0.0, 3.0, 11.0, 15.0])
    sigmas = 0.1 + 1.9 * torch.rand(6, generator=generator)
    batch_steps = {
        "rotated": lambda x: table13_steps.rotated(x, angles),
        "blurred": lambda x: table13_steps.blurred(x, sigmas),
    }
    one_by_one = {
        "flipped": lambda i, k: tv.horizontal_flip(i),
        "solarized": lambda i, k: tv.solarize(i, 128),
        "rotated": lambda i, k: tv.rotate(i, float(angles[k])),
        "blurred": lambda i, k: tv.gaussian_blur(i, [3, 3], [float(sigmas[k])] * 2),
        "sharpened": lambda i, k: tv.adjust_sharpness(i, 2.0),
        "autocontrasted": lambda i, k: tv.autocontrast(i),
    }
    batch = batch_steps.get(name, getattr(table13_steps, name))(images)
    expected = torch.stack([one_by_one[name](image, k) for k, image in enumerate(images)])
    assert batch.dtype == torch.uint8 and torch.equal(batch, expected)


def test_table13_and_the_audio_augmentations_make_no_host_sync():
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    maps = torch.rand(16, 1, 16, 24)
    every = {name: {"p": 1.0} for name in ("noise", "time_shift", "speed", "spec_augment")}
    every["noise"]["std"] = 0.02
    every["time_shift"]["max_fraction"] = 0.2
    every["speed"] |= {"min": 0.9, "max": 1.1}
    every["spec_augment"] |= {"freq_mask": 0.15, "time_mask": 0.1}
    every["mixup"] = {"p": 1.0, "alpha": 0.2}
    audio = build_augment(every, num_classes=4)
    with SyncCounter("cpu") as syncs:
        table13_steps.table13()(images, torch.zeros(16, dtype=torch.long))
        audio(maps, torch.randint(0, 4, (16,)))
    assert syncs.total == 0, syncs.sites  # was: nonzero, .tolist(), Beta's checks, one_hot


def test_the_compiled_fused_update_reads_nothing_back_from_the_device():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    groups = [{"params": [p]} for p in model.parameters()]
    optimizer = fuse_groups(torch.optim.AdamW(groups, lr=1e-3), compile_backend="eager")
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    for step in range(3):
        with SyncCounter("cpu") if step == 2 else on_host() as syncs:
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert optimizer.fused_update.steps_taken == 2 and syncs.total == 0, syncs.sites


def test_the_sync_counter_names_each_site_and_leaves_host_reads_out():
    x = torch.randn(8, 4)
    with SyncCounter("cpu") as syncs:
        x.sum().item()
        int(x.argmax())
        x[x > 0]
        x.nonzero()
        with on_host():
            float(x[0, 0])  # a CPU tensor on every device: no GPU wait
    assert syncs.total == 4 and len(syncs.sites) == 4 and sum(syncs.ours.values()) == 4
    assert all(site.startswith("tests/test_cuda_paths.py:") for site in syncs.sites)


def test_the_recompile_counter_gives_each_recompile_and_its_reason():
    import torch._dynamo

    torch._dynamo.reset()
    layer = torch.compile(nn.Linear(3, 2), backend="eager", dynamic=False)
    with RecompileCounter() as seen:
        for n in (2, 3, 3, 4):
            layer(torch.randn(n, 3))
    assert seen.recompiles == 2 and all("size mismatch" in r for r in seen.reasons)
    assert seen.graphs == 3 and seen.limit_hits == []
