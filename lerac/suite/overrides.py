"""The command line's overrides, composed once before Hydra runs them, so that a typo is
one ``error:`` line naming the closest name (``did you mean trainer.max_epochs?``) or the
group's options, exit 2, instead of Hydra's several lines and exit 1.

A sweep (``regime=conventional,lerac seed=0,1,2``) is checked value by value: the first
value of every override, then each further value of each sweep alone, so a wrong option
anywhere in a sweep is found without composing the whole product. The run folder each
check composes is resolved too, which refuses a ``tag`` that would put a run outside
``paths.output_dir`` before Hydra creates that folder.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from omegaconf import OmegaConf

from lerac.engine.settings import flatten
from lerac.errors import ConfigError, first_line
from lerac.suite.config import CONF_DIR

HYDRA_ONLY = ("help", "hydra_help", "info", "shell_completion", "config_path", "config_dir")


def check_command_line(argv: Sequence[str], config_name: str = "train") -> None:
    """Raise a ConfigError for the first override of ``argv`` that does not compose."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, _ = get_args_parser().parse_known_args(list(argv))
    if any(getattr(args, flag, None) for flag in HYDRA_ONLY):
        return  # Hydra's own help and setups: Hydra answers them
    try:
        parsed = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException as err:
        raise ConfigError(f"an override does not parse: {first_line(err)}") from None
    swept = [o.input_line for o in parsed if o.is_sweep_override()]
    if swept and not args.multirun:
        raise ConfigError(
            f"{swept[0]} lists several values: add -m (--multirun) to run each, or quote the "
            "value to keep it whole (key='a,b')"
        )
    for job in single_values(parsed):
        compose_or_explain(job, args.config_name or config_name)


def single_values(parsed: list) -> list[list[str]]:
    """Jobs that together use every value of every override once: the first values, then
    each further value of each sweep with the first values of the others."""
    choices = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    first = [values[0] for values in choices]
    jobs = [first]
    for i, values in enumerate(choices):
        jobs += [first[:i] + [value] + first[i + 1 :] for value in values[1:]]
    return jobs


def compose_or_explain(job: list[str], config_name: str) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lerac.suite.build import user_error
    from lerac.suite.compose import register_resolvers

    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=job, return_hydra_config=True)
            for key in ("hydra.run.dir", "hydra.sweep.subdir"):  # the run key's resolver
                OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except (HydraException, OmegaConfBaseException) as err:
        mine = user_error(err)  # a resolver of the suite's (a tag that is a path)
        if mine is not None:
            raise ConfigError(str(mine)) from None
        raise ConfigError(explain(err, job, config_name)) from None


def explain(err: Exception, job: list[str], config_name: str) -> str:
    """Hydra's error as one sentence with the fix."""
    from hydra.errors import MissingConfigException

    text = str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        options = list(err.options or [])
        close = difflib.get_close_matches(option, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={option} is not an option: {hint}(conf/{group}: {', '.join(options)})"
    if "Could not delete" in text and (gone := re.search(r"'([^']+)' does not exist", text)):
        return f"~{gone[1]}: {gone[1]} is not a key of the config, so there is nothing to delete"
    key = re.search(r"Could not override '([^']+)'", text)
    if key:
        name = key[1]
        others = [o for o in job if not o.lstrip("~+").startswith(name)]
        close = closest_key(name, others, config_name)
        hint = f"did you mean {close}?" if close else f"to add a new key use +{name}=..."
        return f"{name} is not a key of the config: {hint}"
    if "Ambiguous value" in text:
        return f"{first_line(err)}: to sweep over the values, add -m (--multirun)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def closest_key(name: str, job: list[str], config_name: str) -> str | None:
    """The key of the config (composed with the other overrides) closest to ``name``."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=job)
        keys = list(flatten(OmegaConf.to_container(cfg, resolve=False)))
    except Exception:  # the other overrides do not compose either: no hint
        return None
    keys += sorted({k.rsplit(".", 1)[0] for k in keys if "." in k})  # groups of keys too
    close = difflib.get_close_matches(name, keys, n=1, cutoff=0.75)
    return close[0] if close else None
