"""Objects from config groups: each group's ``_target_`` built with its own keys (the
metadata keys left out), a model given what it needs of its data's input spec, a data set
given its model's tokenizer. Training, the FLOP estimate and the benchmark build through
here alike.
"""

from __future__ import annotations

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from lerac.errors import LeRaCError

# Keys a group file carries for people, checks and reports, not for its constructor.
# "tokenizer": a text model's block, handed to its data set (build_data), not to it.
# "facts": what a data set is (training examples, classes, input shape), for estimates.
METADATA_KEYS = ("id", "table1", "modality", "modalities", "tokenizer", "facts")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a group's ``_target_``, leaving out its metadata keys. A user error
    raised by the constructor reaches the user as it is, not in Hydra's wrapping."""
    container = OmegaConf.to_container(node, resolve=True)
    for key in METADATA_KEYS:
        container.pop(key, None)
    try:
        # Plain lists and dicts, not ListConfig: constructors pass them on to torch.
        return instantiate(container, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = user_error(err)
        if cause is None:
            raise
        raise cause from cause.__cause__


def named_parameters_of(target: str, **offered: Any) -> dict[str, Any]:
    """The ``offered`` keyword arguments that ``target``'s signature names: a constructor
    is handed what it asks for, not every key another group provides."""
    names = inspect.signature(get_object(target)).parameters
    return {key: value for key, value in offered.items() if key in names}


def build_model(node: DictConfig, num_classes: int, input_spec: dict[str, Any]) -> Any:
    """The model group's ``_target_``, given the number of classes and the input spec
    keys (``lerac.suite.data.base``: image, text) that it takes."""
    return build(node, num_classes=num_classes, **named_parameters_of(node._target_, **input_spec))


def build_data(cfg: DictConfig) -> Any:
    """The dataset group's ``_target_``; a text family also gets the model's tokenizer
    block (the model decides how its text is tokenized)."""
    tokenizer = cfg.model.get("tokenizer")
    if tokenizer is not None:
        tokenizer = OmegaConf.to_container(tokenizer, resolve=True)
    return build(cfg.dataset, **named_parameters_of(cfg.dataset._target_, tokenizer=tokenizer))


def user_error(err: BaseException | None) -> LeRaCError | None:
    """The first LeRaCError in ``err``'s chain of causes."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, LeRaCError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
