"""Small synthetic copies of the paper's data sets and checkpoints, in their real on-disk
formats, for ``SMOKE=synthetic`` (``lerac-grid TABLE --smoke --synthetic``): the whole
grid's machinery (composition, launcher, loaders, models, curricula, reports) is checked
on a cluster before hundreds of gigabytes are fetched.

Each writer makes the layout ``lerac-fetch`` would put under the data folder (the
``target`` of lerac/suite/sources.yaml): CIFAR's pickled batches, Tiny ImageNet's and
ImageNet's JPEG trees, ESC-50's wav clips and ``meta/esc50.csv``, CREMA-D's named clips,
the text sets as CSV splits, and tiny randomly initialised CvT and BERT checkpoints
written with ``save_pretrained`` (BERT with its WordPiece vocabulary). Pixels, tones and
words are random: the numbers such a run reports mean nothing.
"""

from __future__ import annotations

import csv
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lerac.errors import ConfigError

MARK = ".synthetic"  # in each folder written here: never mistaken for a fetched copy
WORDS = "the a cat dog sat ran on under red blue big small house river tree is was not".split()


def cifar_batch(rng, n: int, classes: int, label_key: str) -> dict:
    """One batch in the official layout: an (n, 3072) uint8 array (the R, G, B planes of a
    32x32 image) and a list of int labels."""
    return {
        "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, classes, size=n).tolist(),
        "batch_label": "synthetic",
    }


def write_batches(folder: Path, batches: dict[str, dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def write_cifar10(folder: Path, rng, per_batch: int = 20, test: int = 20) -> Path:
    """cifar-10-batches-py: five training batches, the test batch and the class names."""
    batches = {f"data_batch_{i}": cifar_batch(rng, per_batch, 10, "labels") for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(rng, test, 10, "labels")
    batches["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
    return write_batches(folder, batches)


def write_cifar100(folder: Path, rng, train: int = 200, test: int = 50) -> Path:
    """cifar-100-python: the train and test files (fine labels)."""
    sizes = {"train": train, "test": test}
    batches = {split: cifar_batch(rng, n, 100, "fine_labels") for split, n in sizes.items()}
    return write_batches(folder, batches)


def jpeg(path: Path, rng, size: int = 32) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path)


def write_tiny_imagenet(folder: Path, rng, classes: int = 10) -> None:
    wnids = [f"n{index:08d}" for index in range(classes)]
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for wnid in wnids:
        for i in range(4):
            jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", rng, 64)
        name = f"val_{len(lines)}.JPEG"
        jpeg(folder / "val" / "images" / name, rng, 64)
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))


def write_imagenet200(folder: Path, rng) -> None:
    from lerac.suite.data.imagenet200 import WNIDS, read_wnids

    for wnid in read_wnids(WNIDS):
        for split, count in (("train", 2), ("val", 1)):
            for i in range(count):
                jpeg(folder / split / wnid / f"{wnid}_{i}.JPEG", rng)


def tone(path: Path, rng, label: int, seconds: float, rate: int) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * (200 + 40 * label) * t) + 0.05 * rng.standard_normal(len(t))
    soundfile.write(str(path), wave.astype(np.float32), rate)


def write_esc50(folder: Path, rng) -> None:
    header = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    rows = []
    for fold in range(1, 6):
        for target in range(50):
            name = f"{fold}-{fold}{target:03d}-A-{target}.wav"
            tone(folder / "audio" / name, rng, target, 0.25, 44100)
            rows.append([name, fold, target, f"class{target}", False, f"{fold}{target:03d}", "A"])
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    with open(folder / "meta" / "esc50.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def write_crema_d(folder: Path, rng) -> None:
    from lerac.suite.data.crema_d import EMOTIONS

    for actor in range(1001, 1005):
        for label, emotion in enumerate(EMOTIONS):
            tone(folder / "AudioWAV" / f"{actor}_DFA_{emotion}_XX.wav", rng, label, 0.5, 16000)


TEXT_COLUMNS = {"boolq": ("question", "passage"), "rte": ("sentence1", "sentence2"),
                "qnli": ("question", "sentence")}  # fmt: skip


def text_writer(name: str) -> Callable[[Path, object], None]:
    first, second = TEXT_COLUMNS[name]

    def write(folder: Path, rng) -> None:
        words = random.Random(int(rng.integers(1 << 30)))
        for split, count in (("train", 40), ("validation", 12)):
            with open(folder / f"{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow([first, second, "label"])
                for i in range(count):
                    texts = [" ".join(words.choices(WORDS, k=6)) for _ in range(2)]
                    writer.writerow([*texts, i % 2])

    return write


def write_cvt13(folder: Path, rng) -> None:
    from transformers import CvtConfig, CvtForImageClassification

    # depth grows by stage: transformers indexes each stage's drop-path rates by stage number
    config = CvtConfig(embed_dim=[8, 16, 24], num_heads=[1, 2, 3], depth=[1, 2, 3],
                       num_labels=1000)  # fmt: skip
    CvtForImageClassification(config).save_pretrained(folder)


def write_bert(folder: Path, rng) -> None:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", "?"]
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab))
    BertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)


WRITERS: dict[str, Callable[[Path, object], None]] = {
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "tiny_imagenet": write_tiny_imagenet,
    "imagenet200": write_imagenet200,
    "esc50": write_esc50,
    "crema_d": write_crema_d,
    **{name: text_writer(name) for name in TEXT_COLUMNS},
    "cvt-13": write_cvt13,
    "bert-large-uncased": write_bert,
}


def write_synthetic(names: list[str], data_dir: Path) -> list[Path]:
    """A synthetic copy of each of ``names`` (sources.yaml names) under ``data_dir``, where
    ``lerac-fetch`` would put the real one; a copy written before is kept."""
    from lerac.suite.fetch import load_sources, target

    sources = load_sources()
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ConfigError(
            f"SMOKE=synthetic has no synthetic copy of {', '.join(unknown)} (it writes "
            f"{', '.join(WRITERS)}); fetch those with lerac-fetch or leave their blocks out"
        )
    written = []
    for name in names:
        folder = target(data_dir, sources[name])
        if not (folder / MARK).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            WRITERS[name](folder, np.random.default_rng(0))
            (folder / MARK).write_text("written by lerac.suite.synthetic: random content\n")
        written.append(folder)
    return written
