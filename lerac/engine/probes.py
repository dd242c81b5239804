"""Probes: every layer's feature maps and weights measured during training, without
changing the training (``analysis=probes``; definitions in docs/analysis.md).

    trainer = Trainer(settings, probes=Probes(run_dir), ...)   # NoProbes: nothing, free

The trainer calls :meth:`Probes.start` once the run is set up (a fresh run is probed at
initialisation: epoch 0), :meth:`Probes.after_epoch` at the end of every epoch, before the
checkpoint, and :meth:`Probes.finish` after the last epoch. A probe runs the model in eval
mode, without gradients and without its compiled graph, on its own examples: a fixed set
of training examples drawn with ``seed`` (the same for every run seed and regime). It
restores every module's train/eval flag and the Python, NumPy, torch and CUDA random
states, so batch-norm statistics, dropout and the data order are those of a run without
probes.

Every epoch, each layer's relative weight change (``update_pace``) and relative distance
from its initial weights. At the probed epochs (``epochs``: all, or a list; 0 and the
final epoch always), each layer's output on the probe examples (lerac/engine/measures.py):
entropy, its scale-free variant, the maps' std, the activations' std, and the distance to
the initial maps. Distances to the final maps need the last epoch, so each probed epoch
keeps a fixed sample of ``max_values`` output values per layer on disk (float16) until
:meth:`finish` has computed them; memory stays at one epoch's sample whatever the depth.

Files, in the run directory:
  probes.csv                  one row per (epoch, layer), ``FIELDS``; the distances to the
                              final maps are filled in by ``finish``
  probes/examples.csv         the probe examples: index into the training split, target
  probes/model_epochNNNN.pt   the model's weights at ``snapshot_epochs`` (Figure 3)
  probes/maps_NNNN.pt, probes/weights_init.pt   working files, deleted by ``finish``

The rows so far and the probed epochs go into the run's checkpoint (``state_dict``); every
file is written atomically, so a run killed at any point resumes to the same probes.csv.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lerac.engine.batches import count, take
from lerac.engine.checkpoint import rng_state, set_rng_state
from lerac.engine.io import atomic_open, load_torch, save_torch
from lerac.engine.measures import (
    channel_dim,
    distances,
    feature_maps,
    first_tensor,
    flat_weights,
    map_entropy,
    relative_change,
    sample_index,
    standardised,
)
from lerac.engine.settings import Rule, check_values, positive
from lerac.errors import LeRaCError
from lerac.layers import Layer, call_model, find_layers

PROBES_CSV = "probes.csv"
PROBES_DIR = "probes"
EXAMPLES_CSV = "examples.csv"
FINAL_FIELDS = [
    "distance_to_final",
    "relative_distance_to_final",
    "unit_distance_to_final",
    "snr_db",
]
FIELDS = [
    "epoch", "layer", "unit", "name", "module", "channels", "positions",
    "entropy", "entropy_scale_free", "map_std", "activation_std",
    "distance_to_initial", "relative_distance_to_initial", *FINAL_FIELDS,
    "update_pace", "weight_distance_from_init",
]  # fmt: skip
MAP_DTYPES = {"float16": torch.float16, "float32": torch.float32}
FLOAT16_MAX = 65504.0


def _epoch_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in value
    )


PROBE_RULES = (
    Rule(
        "analysis.epochs",
        object,
        lambda v: v == "all" or _epoch_list(v),
        "all or a list of epochs",
        "[0,6,12]",
    ),
    Rule("analysis.examples", int, positive, "a positive number of examples", "64"),
    Rule("analysis.seed", int, lambda v: 0 <= v < 2**32, "from 0 to 2**32 - 1", "0"),
    Rule("analysis.batch_size", int, positive, "a positive batch size", "64"),
    Rule("analysis.max_values", int, positive, "a positive number of values", "8192"),
    Rule("analysis.snapshot_epochs", object, _epoch_list, "a list of epochs", "[6]"),
    Rule("analysis.map_dtype", str, lambda v: v in MAP_DTYPES, "float16 or float32", "float16"),
)


class NoProbes:
    """Measures nothing (analysis=none): every call returns at once."""

    def start(
        self, model: nn.Module, splits: Any, units: list[Layer], device: Any, epoch: int
    ) -> None:
        pass

    def after_epoch(self, epoch: int, model: nn.Module) -> None:
        pass

    def finish(self, model: nn.Module) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class ProbedLayer:
    """A layer as layer discovery finds it: its forward position, the rate unit that
    trains it (the row of lr_schedule.csv), its module and parameters."""

    index: int
    unit: int
    name: str
    module: nn.Module
    params: tuple[nn.Parameter, ...]


@contextmanager
def isolated(model: nn.Module) -> Iterator[None]:
    """Eval mode, no gradients, no compiled graph (hooks run eagerly); afterwards every
    module's train/eval flag and every random state as they were."""
    rngs = rng_state()
    flags = [(m, m.training) for m in model.modules()]
    compiled = model.__dict__.get("_compiled_call_impl")
    if compiled is not None:
        model._compiled_call_impl = None
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for module, flag in flags:
            module.training = flag
        if compiled is not None:
            model._compiled_call_impl = compiled
        set_rng_state(rngs)


def probe_index(train_size: int, count: int, seed: int) -> Tensor:
    """The probe examples: ``count`` indices into the training split, drawn with ``seed``
    by a generator of their own, in increasing order."""
    order = torch.randperm(train_size, generator=torch.Generator().manual_seed(seed))
    return order[: min(count, train_size)].sort().values


def probe_batches(splits: Any, index: Tensor, batch_size: int, device: Any) -> list[Any]:
    """The probe examples' inputs, prepared as evaluation batches are (normalised, no
    augmentation), on ``device``; works for in-memory and streaming splits alike."""
    inputs, targets = splits.train
    chosen = (
        [inputs[i] for i in index.tolist()] if isinstance(inputs, list) else take(inputs, index)
    )
    subset = dataclasses.replace(splits, train=(chosen, targets[index]))
    loader = subset.loader(
        "train", batch_size, device, shuffle=False, transform=splits.normalizer(device)
    )
    return [batch_inputs for batch_inputs, _ in loader]


def discover(model: nn.Module, inputs: Any, units: list[Layer]) -> list[ProbedLayer]:
    """Every layer :func:`lerac.layers.find_layers` finds, in forward order, with the index
    of the rate unit that holds its parameters."""
    modules = dict(model.named_modules())
    unit_of = {id(p): u for u, unit in enumerate(units) for p in unit.params}
    return [
        ProbedLayer(
            i,
            unit_of.get(id(layer.params[0]), i),
            layer.name,
            model if layer.name == "<root>" else modules[layer.name],
            layer.params,
        )
        for i, layer in enumerate(find_layers(model, inputs))
    ]


class LayerRecord:
    """One layer's output over the probe batches of one pass: sums for the means, and the
    sampled values kept for the distances."""

    def __init__(self) -> None:
        self.entropy = self.scale_free = self.map_std = 0.0  # sums over maps
        self.maps = 0
        self.total = self.squares = 0.0
        self.count = 0
        self.channels: int | None = None
        self.positions: int | None = None
        self.values: list[Tensor] = []
        self.batches: set[int] = set()

    def add(self, layer: ProbedLayer, output: Tensor, batch: int, sample: Tensor) -> None:
        """One batch's output; a module run twice in one pass counts its first run."""
        if batch in self.batches:
            return
        self.batches.add(batch)
        x = output.detach()
        wide = x.double()
        self.total += wide.sum().item()
        self.squares += wide.pow(2).sum().item()
        self.count += x.numel()
        self.values.append(x.flatten()[sample.to(x.device)].float().cpu())
        dim = channel_dim(layer.module, layer.params, x)
        if dim is None:
            return
        maps = feature_maps(x, dim)
        self.channels, self.positions = maps.shape[1], maps.shape[2]
        if self.positions < 2:
            return
        self.entropy += map_entropy(maps).sum().item()
        self.scale_free += map_entropy(standardised(maps)).sum().item()
        self.map_std += (maps - maps.mean(-1, keepdim=True)).pow(2).mean(-1).sqrt().sum().item()
        self.maps += maps.shape[0] * maps.shape[1]

    def measures(self) -> dict[str, Any]:
        mean = self.total / max(self.count, 1)
        var = max(self.squares / max(self.count, 1) - mean * mean, 0.0)
        per_map = (lambda s: s / self.maps) if self.maps else (lambda s: None)
        return {
            "channels": self.channels,
            "positions": self.positions,
            "entropy": per_map(self.entropy),
            "entropy_scale_free": per_map(self.scale_free),
            "map_std": per_map(self.map_std),
            "activation_std": math.sqrt(var),
        }

    def stored(self, dtype: torch.dtype) -> Tensor:
        values = torch.cat(self.values) if self.values else torch.zeros(0)
        if dtype == torch.float16:
            values = values.clamp(-FLOAT16_MAX, FLOAT16_MAX)
        return values.to(dtype)


class Probes(NoProbes):
    """Probes of every layer (module docstring). ``epochs``: ``"all"`` or the epochs whose
    maps are measured (0 and the final epoch are always); ``examples`` training examples
    drawn with ``seed``, run in batches of ``batch_size``; ``max_values`` map values kept
    per layer and probed epoch for the distances (``map_dtype``); ``snapshot_epochs``: the
    epochs whose model weights are saved (Figure 3 draws their maps)."""

    def __init__(
        self,
        run_dir: str | Path,
        epochs: Any = "all",
        examples: int = 64,
        seed: int = 0,
        batch_size: int = 64,
        max_values: int = 8192,
        snapshot_epochs: Any = (),
        map_dtype: str = "float16",
    ) -> None:
        options = dict(
            epochs=epochs,
            examples=examples,
            seed=seed,
            batch_size=batch_size,
            max_values=max_values,
            snapshot_epochs=list(snapshot_epochs),
            map_dtype=map_dtype,
        )
        check_values({f"analysis.{k}": v for k, v in options.items()}, PROBE_RULES)
        self.dir = Path(run_dir)
        self.folder = self.dir / PROBES_DIR
        self.epochs = None if epochs == "all" else set(epochs)
        self.examples, self.seed, self.batch_size = examples, seed, batch_size
        self.max_values, self.dtype = max_values, MAP_DTYPES[map_dtype]
        self.snapshot_epochs = set(snapshot_epochs)
        self.rows: list[dict[str, Any]] = []
        self.map_epochs: list[int] = []
        self.layers: list[ProbedLayer] = []
        self.batches: list[Any] = []
        self._previous: dict[int, Tensor] = {}
        self._samples: dict[tuple[int, int], Tensor] = {}

    # --- the run's state -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(r) for r in self.rows], "map_epochs": list(self.map_epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.map_epochs = list(state.get("map_epochs", []))

    def maps_file(self, epoch: int) -> Path:
        return self.folder / f"maps_{epoch:04d}.pt"

    @property
    def weights_file(self) -> Path:
        return self.folder / "weights_init.pt"

    # --- the trainer's calls ---------------------------------------------------------

    def start(
        self, model: nn.Module, splits: Any, units: list[Layer], device: Any, epoch: int
    ) -> None:
        """Find the layers and prepare the probe examples; a fresh run is probed at
        initialisation (epoch 0), a resumed one continues from the checkpoint's rows."""
        index = probe_index(splits.sizes()["train"], self.examples, self.seed)
        with isolated(model):
            self.batches = probe_batches(splits, index, self.batch_size, device)
            self.layers = discover(model, self.batches[0], units)
        self._previous = {layer.index: flat_weights(layer.params) for layer in self.layers}
        if self.rows:
            return
        if epoch:
            raise LeRaCError(
                f"{self.dir}: the checkpoint (epoch {epoch}) was written without probes; "
                "retrain the run with overwrite=true to probe it from initialisation"
            )
        targets = splits.train[1][index].tolist()
        with atomic_open(self.folder / EXAMPLES_CSV, newline="") as f:
            csv.writer(f).writerows([["index", "target"], *zip(index.tolist(), targets)])
        save_torch(self.weights_file, self._previous)
        self.after_epoch(0, model)

    def after_epoch(self, epoch: int, model: nn.Module) -> None:
        """Each layer's weight change in ``epoch``; its maps when ``epoch`` is probed."""
        weights = {layer.index: flat_weights(layer.params) for layer in self.layers}
        # Memory-mapped: a large model's initial weights are not read into memory whole.
        initial = torch.load(self.weights_file, map_location="cpu", weights_only=True, mmap=True)
        for layer in self.layers:
            before = self._previous[layer.index]
            self.rows.append(
                {
                    "epoch": epoch,
                    "layer": layer.index,
                    "unit": layer.unit,
                    "name": layer.name,
                    "module": type(layer.module).__name__,
                    "update_pace": relative_change(weights[layer.index], before) if epoch else None,
                    "weight_distance_from_init": relative_change(
                        weights[layer.index], initial[layer.index]
                    ),
                }
            )
        self._previous = weights
        if epoch == 0 or self.epochs is None or epoch in self.epochs:
            self.measure_maps(epoch, model)
        if epoch in self.snapshot_epochs:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_torch(self.folder / f"model_epoch{epoch:04d}.pt", state)
        self.write()

    def measure_maps(self, epoch: int, model: nn.Module) -> None:
        """Run the probe examples through the model; fill ``epoch``'s rows with the maps'
        measures and their distance to the initial maps; keep the sample on disk."""
        records = self.forward(model)
        scale = {i: r.count / max(sum(v.numel() for v in r.values), 1) for i, r in records.items()}
        stored = {i: r.stored(self.dtype) for i, r in records.items()}
        save_torch(self.maps_file(epoch), {"values": stored, "scale": scale})
        initial = stored if epoch == 0 else load_torch(self.maps_file(0))["values"]
        for row in self.rows_of(epoch):
            i = row["layer"]
            row.update(records[i].measures())
            if stored[i].numel():
                d = distances(stored[i], initial[i], scale[i], self.example_count)
                row["distance_to_initial"] = d["distance"]
                row["relative_distance_to_initial"] = d["relative"]
        if epoch not in self.map_epochs:
            self.map_epochs.append(epoch)

    def forward(self, model: nn.Module) -> dict[int, LayerRecord]:
        """One pass over the probe batches with a forward hook on every layer."""
        records = {layer.index: LayerRecord() for layer in self.layers}
        batch = [0]

        def hook_for(layer: ProbedLayer):
            def hook(_module: nn.Module, _args: Any, output: Any) -> None:
                tensor = first_tensor(output)
                if tensor is not None:
                    sample = self.sample(layer.index, batch[0], tensor.numel())
                    records[layer.index].add(layer, tensor, batch[0], sample)

            return hook

        with isolated(model):
            handles = [layer.module.register_forward_hook(hook_for(layer)) for layer in self.layers]
            try:
                for batch[0], inputs in enumerate(self.batches):
                    call_model(model, inputs)
            finally:
                for handle in handles:
                    handle.remove()
        return records

    def sample(self, layer: int, batch: int, numel: int) -> Tensor:
        """The positions of one layer's batch output kept for the distances: the same at
        every epoch (a generator of their own, seeded by probe seed, layer and batch)."""
        key = (layer, batch)
        if key not in self._samples:
            per_batch = math.ceil(self.max_values / len(self.batches))
            seed = (self.seed * 1_000_003 + layer * 4_099 + batch) % 2**63
            generator = torch.Generator().manual_seed(seed)
            self._samples[key] = sample_index(numel, per_batch, generator)
        return self._samples[key]

    def rows_of(self, epoch: int) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["epoch"] == epoch]

    def finish(self, model: nn.Module) -> None:
        """Probe the final epoch if it was not, compute every probed epoch's distance to
        the final maps, write probes.csv whole and delete the working files."""
        if not self.rows:
            return
        last = max(row["epoch"] for row in self.rows)
        if self.finished(last):
            return  # a rerun after a kill between probes.csv and the run's end
        if last not in self.map_epochs:
            self.measure_maps(last, model)
        final = self.read_maps(last)
        for epoch in self.map_epochs:
            stored = self.read_maps(epoch)
            for row in self.rows_of(epoch):
                i = row["layer"]
                if stored["values"][i].numel():
                    d = distances(
                        stored["values"][i],
                        final["values"][i],
                        stored["scale"][i],
                        self.example_count,
                    )
                    row.update(distance_to_final=d["distance"], snr_db=d["snr_db"])
                    row.update(relative_distance_to_final=d["relative"])
                    row.update(unit_distance_to_final=d["unit"])
        self.write()
        for epoch in [last, *self.map_epochs]:  # the final maps first: see finished()
            self.maps_file(epoch).unlink(missing_ok=True)
        self.weights_file.unlink(missing_ok=True)

    @property
    def example_count(self) -> int:
        return sum(count(inputs) for inputs in self.batches)

    def read_maps(self, epoch: int) -> dict[str, Any]:
        file = self.maps_file(epoch)
        if not file.is_file():
            raise LeRaCError(
                f"{file} is missing (the probes' maps of epoch {epoch}); retrain the run with "
                "overwrite=true"
            )
        return load_torch(file)

    def finished(self, last: int) -> bool:
        """Whether probes.csv already holds the distances to the final epoch ``last``."""
        file = self.dir / PROBES_CSV
        if self.maps_file(last).is_file() or not file.is_file():
            return False
        with open(file, newline="") as f:
            rows = list(csv.DictReader(f))
        return bool(rows) and int(rows[-1]["epoch"]) == last and rows[0]["distance_to_final"] != ""

    def write(self) -> None:
        """probes.csv from the rows so far (atomically)."""
        with atomic_open(self.dir / PROBES_CSV, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(FIELDS)
            for row in sorted(self.rows, key=lambda r: (r["epoch"], r["layer"])):
                writer.writerow([_cell(row.get(field)) for field in FIELDS])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)
