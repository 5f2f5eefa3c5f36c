"""The one way a trial is built: Hydra composes conf/ (shipped as windtunnel.conf) with the user's overrides,
and OmegaConf.to_object turns the result into plain dataclasses, once.

`windtunnel train ARGS`, `windtunnel sweep ARGS` (its jobs), the members of a packed job and the tests call
compose(overrides); a trial that starts from a record (a run's config.json, a prediction, a decay branch of a
stable run, a launch) is compose_record(record, overrides). So the same overrides give the same TrialConfig
everywhere, and code asks for a change the way a user does (config.override(key, value)), never by mutating
a dataclass. The model group is the ladder of sizing.LADDER, registered here in Hydra's ConfigStore (no YAML
copy that could drift). The module is callable: `from windtunnel import compose; compose([...])`.
"""
import copy
import dataclasses
import re
from typing import Any, Optional

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import sizing
from .config import (RUN_DIR_EXCLUDE, ConfigError, SweepJobConfig, TrialConfig, callable_module, installed,
                     run_dir_name_of, safe_name, to_dict)

CONFIG_MODULE = "windtunnel.conf"
_NUMBER = re.compile(r"^[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def register_configs() -> None:
    """The schema (conf/config.yaml names it first in its defaults list), one model option per ladder entry, and
    the resolver that gives conf/config.yaml config.RUN_DIR_EXCLUDE (the keys left out of run dir names).
    Idempotent: ConfigStore replaces a node stored twice under one name."""
    store = ConfigStore.instance()
    store.store(name="trial_schema", node=SweepJobConfig)
    for name in sizing.LADDER:
        store.store(group="model", name=name, node=sizing.preset(name))
    OmegaConf.register_new_resolver("windtunnel_run_dir_exclude", lambda: list(RUN_DIR_EXCLUDE), replace=True)
    OmegaConf.register_new_resolver("windtunnel_run_dir", lambda line: run_dir_name_of(str(line)), replace=True)


register_configs()


def _int_fields() -> set[str]:
    """Dotted names of the int fields of a sweep job (their values may be written 1e6 on the command line)."""
    out = set()

    def walk(cls, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.type):
                walk(f.type, f"{prefix}{f.name}.")
            elif f.type in (int, "int"):
                out.add(prefix + f.name)
    walk(SweepJobConfig, "")
    return out


INT_FIELDS = _int_fields()


def normalize(overrides: list[str]) -> list[str]:
    """Integral numbers in exponent or underscore form (train.total_tokens=1e6, =2_000_000, sweeps of them:
    =1e6,2e6) become plain integers for int fields, which OmegaConf would refuse as floats."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+~") in INT_FIELDS:
            parts = value.split(",")
            if all(_NUMBER.match(p.strip()) for p in parts):
                numbers = [float(p.replace("_", "")) for p in parts]
                if all(n.is_integer() for n in numbers):
                    value = ",".join(str(int(n)) for n in numbers)
        out.append(f"{key}{sep}{value}")
    return out


def compose_config(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """conf/config.yaml composed with the overrides (Hydra's full grammar). Hydra's composition errors
    become one ConfigError naming the override."""
    overrides = normalize(list(overrides))
    fast = None if hydra_node else _compose_on_a_base(overrides)
    return fast if fast is not None else _compose("config", overrides, hydra_node)


# A field of a section set to a plain scalar (optim.lr=0.01, train.seed=3, schedule.kind=wsd): what varies between the
# trials of a grid, a demo or a test. Hydra applies such value overrides last, each by OmegaConf.update on the composed
# tree, so composing the rest once and applying these on a copy is the same composition without Hydra's 0.2-0.4 s of
# search path and defaults list per trial.
_VALUE_OVERRIDE = re.compile(r"(model|optim|schedule|data|train)\.\w+=[\w.+\-]+")
_BASES: dict = {}  # the rest of the overrides (a tuple) -> conf/config.yaml composed with them
_PARSER: list = []


def _compose_on_a_base(overrides: list[str]) -> Optional[DictConfig]:
    """compose_config's result through a cached base: the overrides other than plain value overrides composed by Hydra
    once, the value overrides applied on a copy as Hydra applies them. None where this path does not apply (inside a
    running Hydra app, whose search path is its own; a key set twice; anything that fails: the full composition then
    gives Hydra's own result or message)."""
    values = [o for o in overrides if _VALUE_OVERRIDE.fullmatch(o)]
    rest = [o for o in overrides if o not in values]
    keys = [o.partition("=")[0] for o in values]
    if not values or GlobalHydra.instance().is_initialized() or len(set(keys)) < len(keys) or \
            any(o.lstrip("+~").partition("=")[0] in keys for o in rest):
        return None
    try:
        base = _BASES.get(tuple(rest))
        if base is None:
            if len(_BASES) >= 64:
                _BASES.clear()
            base = _BASES[tuple(rest)] = _compose("config", rest)
        if not _PARSER:
            from hydra.core.override_parser.overrides_parser import OverridesParser
            _PARSER.append(OverridesParser.create())
        cfg = copy.deepcopy(base)
        for parsed in _PARSER[0].parse_overrides(values):
            OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=True)
        return cfg
    except Exception:  # noqa: BLE001 - the full composition decides, and words the error
        return None


def _compose(name: str, overrides: list[str], hydra_node: bool = False) -> DictConfig:
    overrides = normalize(list(overrides))
    try:
        if GlobalHydra.instance().is_initialized():  # inside the running sweep app: its Hydra, the same tree
            return hydra_compose(name, overrides=overrides, return_hydra_config=hydra_node)
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return hydra_compose(name, overrides=overrides, return_hydra_config=hydra_node)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_error(err, overrides)) from None


def hydra_error(err: Exception, overrides: list[str]) -> str:
    """One readable message from a Hydra/OmegaConf error: what was wrong, in which override, and the fix."""
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    if first.endswith(":") and len(lines) > 1:  # "... raised while composing config:": the reason is below
        first = f"{first} {lines[1]}" + "".join(f" ({line})" for line in lines[2:] if line.startswith("full_key:"))
    missing_group = re.search(r"Could not find '(\w+)/([^']+)'", text)
    if missing_group:
        group, option = missing_group.groups()
        if "submitit" in option and not installed("hydra_plugins.hydra_submitit_launcher"):  # the cluster extra
            return (f"the {option.split('/')[-1]} launcher is not installed: pip install 'windtunnel[cluster]' "
                    f"(hydra-submitit-launcher)")
        if group == "model":
            return (f"model={option!r} is not in the ladder; use one of {', '.join(sizing.LADDER)} "
                    f"(or set model.d_model=..., model.n_layers=... on a ladder entry)")
        return f"{group}={option!r} is not an option of the {group} group ({first})"
    unknown = re.match(r"Could not override '([\w.]+)'", text)
    if unknown:
        return unknown_key(unknown.group(1))
    merging = re.match(r"Error merging override (.+)", first)
    if merging and err.__cause__ is not None:
        cause = str(err.__cause__).strip().splitlines()[0]
        return f"{merging.group(1)}: {cause}"
    return first


def unknown_key(key: str) -> str:
    """The message for a key that is not a field: the known fields of the section it names."""
    swept = key.removeprefix("hydra.sweeper.params.")
    if swept != key:  # a dotted key under params is a nested node to OmegaConf, not the flat key a sweep file holds
        return (f"{key!r}: to narrow or change a key the sweep file sweeps, give the key itself: {swept}=... (a key "
                f"given twice keeps the command line's values)")
    cls, parts = SweepJobConfig, key.split(".")
    for i, part in enumerate(parts[:-1]):
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        if not dataclasses.is_dataclass(fields.get(part)):
            break
        cls = fields[part]
    known = sorted(f.name for f in dataclasses.fields(cls))
    return (f"unknown config key {key!r}: {cls.__name__} has no field {parts[-1]!r}; check the key's spelling "
            f"against windtunnel/config.py (known here: {', '.join(known)})")


def _to_object(cfg: Any) -> Any:
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def _check_keys(cfg: Any, cls, prefix: str = "") -> None:
    """Every key is a field: Hydra accepts `+optim.foo=1` on this schema and to_object would drop it silently."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for key in cfg.keys() if isinstance(cfg, DictConfig) else []:
        if key == "hydra" and not prefix:
            continue
        if key not in fields:
            raise ConfigError(unknown_key(f"{prefix}{key}"))
        if dataclasses.is_dataclass(fields[key]):
            _check_keys(cfg[key], fields[key], f"{prefix}{key}.")


def to_job(cfg: DictConfig) -> SweepJobConfig:
    """DictConfig -> dataclasses, once; its tokens resolved (train.tokens_per_param and decay branches against N, as
    a run dir records them) and checked as any trial's."""
    _check_keys(cfg, SweepJobConfig)
    job = _to_object(cfg)
    if not safe_name(job.sweep_name):
        raise ConfigError(f"sweep_name={job.sweep_name!r} must be a plain name (letters, digits, . _ + -): it names "
                          f"the sweep dir runs/<sweep_name>")
    job.train = sizing.resolve_tokens(job.trial()).validate().train
    return job


def compose_job(overrides: list[str]) -> SweepJobConfig:
    return to_job(compose_config(overrides))


def compose(overrides: Optional[list[str]] = None) -> TrialConfig:
    """The TrialConfig of these overrides, validated, its tokens resolved (train.total_tokens from
    train.tokens_per_param and the last decay branch, in whole batches): the trial exactly as its run dir records it."""
    return compose_job(list(overrides or [])).trial()


SECTION_GROUPS = ("model", "optim", "schedule", "data", "train")  # config groups that each fill one section


def compose_record(record, overrides: Optional[list[str]] = None) -> TrialConfig:
    """A recorded trial (a TrialConfig, a run's config.json "trial", a launch's trial.json) with overrides on top,
    through the same grammar (lists included). A group choice (`data=stdlib_site_bpe`) sets the fields its option
    sets, over the recorded section (as a later entry does in Hydra's defaults list); field overrides apply last."""
    if isinstance(record, TrialConfig):
        record = to_dict(record)
    overrides = list(overrides or [])
    picks = [o for o in overrides if o.partition("=")[0] in SECTION_GROUPS and o.partition("=")[1]]
    options = []
    for pick in picks:
        compose_config([pick])  # an unknown option fails here, with the message a sweep would give
        group, _, option = pick.partition("=")
        options.append(OmegaConf.to_container(_compose(f"{group}/{option}", [])))
    overrides = [o for o in overrides if o not in picks]
    try:
        node = OmegaConf.merge(OmegaConf.structured(TrialConfig), _literal(record), *options)
    except OmegaConfBaseException as err:
        raise ConfigError(f"the recorded trial does not fit windtunnel/config.py: {str(err).splitlines()[0]}") from None
    ConfigStore.instance().store(name="_record", node=node)
    return sizing.resolve_tokens(_to_object(_compose("_record", overrides))).validate()


def _literal(value: Any) -> Any:
    """A recorded value is what it says: `${...}` in a string is escaped so OmegaConf does not interpolate it."""
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    return value.replace("${", "\\${") if isinstance(value, str) else value


def run_dir_name(overrides: list[str]) -> str:
    """The run dir name of a sweep job with these overrides, as Hydra names it (hydra.job.override_dirname: the
    job's own overrides, sorted, without config.RUN_DIR_EXCLUDE and Hydra's own), read off the overrides alone: a
    grid's names are known without composing each job again."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    try:
        parsed = OverridesParser.create().parse_overrides(normalize(list(overrides)))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(hydra_error(err, overrides)) from None
    return run_dir_name_of(",".join(sorted(o.input_line for o in parsed
                                           if not o.is_hydra_override() and o.key_or_group not in RUN_DIR_EXCLUDE)))


callable_module(__name__, compose)
