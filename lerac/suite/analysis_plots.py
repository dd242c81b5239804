"""Pictures of the probes (analysis=probes, docs/analysis.md): a per-layer heatmap of any
run, and the paper's Figure 3.

    python -m lerac.suite.plots outputs/analysis/cifar10_resnet18_lerac_seed0   # probes.png

:func:`plot_probe_heatmaps`: layer x epoch, three panels: the update pace (log scale), the
relative distance to the final maps and the entropy, layer 0 (the input side) at the top.
Under LeRaC the deep layers' pace stays orders of magnitude below the first layers' for
the k epochs of the curriculum; the panels show when they catch up.

:func:`figure3`: for a few images, the 4 highest- and 4 lowest-entropy maps of the first
and the last conv layer, for each regime, from the weights saved at epoch k
(``analysis.snapshot_epochs``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from lerac.engine.probes import PROBES_CSV, PROBES_DIR  # noqa: E402
from lerac.errors import LeRaCError  # noqa: E402

HEATMAPS = (
    ("update_pace", "update pace ||W_e - W_e-1|| / ||W_e-1||", True),
    ("relative_distance_to_final", "relative distance to the final maps", False),
    ("entropy", "entropy of the maps (normalised)", False),
)


def read_probes(run_dir: str | Path) -> list[dict[str, Any]]:
    """probes.csv's rows, numbers as floats (NaN where empty), epoch and layer as ints."""
    file = Path(run_dir) / PROBES_CSV
    if not file.is_file():
        raise LeRaCError(f"{file} does not exist: train the run with analysis=probes")
    text_fields = ("name", "module")
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            if key in ("epoch", "layer", "unit"):
                parsed[key] = int(value)
            elif key in text_fields:
                parsed[key] = value
            else:
                parsed[key] = float(value) if value not in ("", None) else math.nan
        out.append(parsed)
    return out


def grid_of(rows: list[dict[str, Any]], field: str) -> tuple[np.ndarray, list[int], list[str]]:
    """``field`` as a (layers, epochs) array, with the epochs and the layer names."""
    epochs = sorted({r["epoch"] for r in rows})
    layers = sorted({r["layer"] for r in rows})
    names = {r["layer"]: r["name"] for r in rows}
    values = np.full((len(layers), len(epochs)), np.nan)
    column = {e: i for i, e in enumerate(epochs)}
    for r in rows:
        values[r["layer"], column[r["epoch"]]] = r.get(field, np.nan)
    return values, epochs, [names[i] for i in layers]


def _layer_ticks(ax, names: list[str]) -> None:
    step = max(1, len(names) // 12)
    ticks = list(range(0, len(names), step))
    ax.set_yticks(ticks, [f"{i} {names[i]}" for i in ticks], fontsize=6)


def plot_probe_heatmaps(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """The three layer x epoch panels of one run (module docstring), as a PNG."""
    run_dir = Path(run_dir)
    rows = read_probes(run_dir)
    fig, axes = plt.subplots(1, len(HEATMAPS), figsize=(5 * len(HEATMAPS), 5.5))
    for ax, (field, title, log) in zip(axes, HEATMAPS):
        values, epochs, names = grid_of(rows, field)
        masked = np.ma.masked_invalid(values)
        positive = masked[masked > 0] if log else masked
        norm = None
        if log and positive.count():
            norm = LogNorm(vmin=float(positive.min()), vmax=float(positive.max()))
            masked = np.ma.masked_where(~(values > 0), values)
        image = ax.imshow(masked, aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=6)
        _layer_ticks(ax, names)
        ax.set(xlabel="epoch (0 = initialisation)", title=title)
        ax.title.set_fontsize(9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"{run_dir.name}: every layer (top = input side)", fontsize=10)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "probes.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --- Figure 3 ------------------------------------------------------------------------


def snapshot_model(run_dir: Path, epoch: int, splits: Any) -> torch.nn.Module:
    """The run's model with the weights it saved at ``epoch`` (analysis.snapshot_epochs)."""
    from omegaconf import OmegaConf

    from lerac.engine.io import load_torch
    from lerac.suite.build import build_model

    file = run_dir / PROBES_DIR / f"model_epoch{epoch:04d}.pt"
    if not file.is_file():
        raise LeRaCError(
            f"{file} does not exist: Figure 3 needs the weights of epoch {epoch}; train the "
            f"run with analysis=probes analysis.snapshot_epochs=[{epoch}]"
        )
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = build_model(cfg.model, splits.num_classes, splits.input_spec)
    model.load_state_dict(load_torch(file))
    return model.eval()


def run_splits(run_dir: Path) -> Any:
    """The run's data as it trained on it (its saved config; normalisation statistics)."""
    from omegaconf import OmegaConf

    from lerac.suite.build import build_data
    from lerac.suite.protocol import resolve_protocol

    cfg, protocol = resolve_protocol(OmegaConf.load(run_dir / "config.yaml"))
    return protocol.adapt_splits(build_data(cfg))


def pick_images(splits: Any, folder: str | Path | None, count: int, seed: int) -> torch.Tensor:
    """``count`` uint8 images drawn with ``seed``: from the image files in ``folder``
    (resized and cropped to the data set's size and channels), else from the test split."""
    generator = torch.Generator().manual_seed(seed)
    if folder is None:
        images = splits.test[0]
        return images[torch.randperm(len(images), generator=generator)[:count]]
    from lerac.suite.data.images import list_images, read_image

    files = list_images(Path(folder)) if Path(folder).is_dir() else []
    if len(files) < count:
        raise LeRaCError(f"{folder} holds {len(files)} image files; Figure 3 needs {count}")
    chosen = torch.randperm(len(files), generator=generator)[:count].tolist()
    channels, size = splits.input_spec["in_channels"], splits.input_spec["image_size"]
    return torch.stack([read_image(files[i], channels, size) for i in chosen])


def first_and_last_conv(model: torch.nn.Module, inputs: torch.Tensor) -> list[tuple[str, Any]]:
    """The first and the last convolution in forward order, by name."""
    from lerac.layers import find_layers

    modules = dict(model.named_modules())
    convs = [
        layer.name
        for layer in find_layers(model, inputs)
        if isinstance(modules.get(layer.name), torch.nn.modules.conv._ConvNd)
    ]
    if not convs:
        raise LeRaCError("the model has no convolution: Figure 3 draws conv feature maps")
    return [("first conv", convs[0]), ("last conv", convs[-1])]


def conv_maps(model: torch.nn.Module, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first and last conv's outputs (before their BN) on ``inputs``, by role."""
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = []
    for role, name in first_and_last_conv(model, inputs):
        hook = lambda _m, _a, out, role=role: outputs.setdefault(role, out.detach())  # noqa: E731
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def figure3(
    runs: dict[str, Path],
    epoch: int,
    out: str | Path,
    images: str | Path | None = None,
    count: int = 3,
    seed: int = 0,
) -> Path:
    """The paper's Figure 3 for ``runs`` (regime -> run directory, the same data set): per
    image, per regime, the first and the last conv's 4 highest- and 4 lowest-entropy maps
    at ``epoch``. Images: ``count`` drawn with ``seed`` from ``images`` (a folder), else
    from the data set's test split."""
    splits = run_splits(next(iter(runs.values())))
    raw = pick_images(splits, images, count, seed)
    inputs = splits.normalizer("cpu")(raw)
    maps = {
        regime: conv_maps(snapshot_model(run_dir, epoch, splits), inputs)
        for regime, run_dir in runs.items()
    }
    return draw_figure3(raw, maps, epoch, Path(out))


def draw_figure3(
    raw: torch.Tensor, maps: dict[str, dict[str, torch.Tensor]], epoch: int, out: Path
) -> Path:
    """One row per (image, regime, layer): the image, then its 4 highest- and 4
    lowest-entropy maps, each titled with its entropy."""
    from lerac.engine.measures import map_entropy

    rows = [(i, regime, role) for i in range(len(raw)) for regime in maps for role in maps[regime]]
    fig, axes = plt.subplots(len(rows), 9, figsize=(9 * 1.05, len(rows) * 1.15), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (i, regime, role) in enumerate(rows):
        if r % (len(rows) // len(raw)) == 0:
            picture = raw[i].permute(1, 2, 0).squeeze(-1).numpy()
            axes[r, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        layer_maps = maps[regime][role][i]
        entropy = map_entropy(layer_maps.flatten(1))
        order = torch.argsort(entropy, descending=True)
        for c, channel in enumerate([*order[:4].tolist(), *order[-4:].flip(0).tolist()]):
            axes[r, 1 + c].imshow(layer_maps[channel].numpy(), cmap="viridis")
            axes[r, 1 + c].set_title(f"{entropy[channel]:.4f}", fontsize=5)
        axes[r, 1].text(-0.1, 0.5, f"{regime}\n{role}", transform=axes[r, 1].transAxes,
                        ha="right", va="center", fontsize=6)  # fmt: skip
    fig.suptitle(
        f"Figure 3: highest (left 4) and lowest (right 4) entropy maps at epoch {epoch}",
        fontsize=8,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
