"""The backend flags of `labeler pseudo-label` / `labeler run`, generated from the backend configs.

Each config in data_schema/backends.py names the fields it exposes (`cli_flags`); a flag's type, help
text and default are its field's, so nothing here lists a backend. The flags are None unless given:
an unset flag keeps the config's default, and a flag of a backend that is not selected is refused.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import TypeAdapter, ValidationError

from data_schema.backends import BackendConfig, MaskConfig, StereoConfig, backend_name, config_classes
from data_schema.commands import PseudoLabelConfig

# The option that selects a backend -> the union of its configs (one class per backend).
SELECTORS: dict[str, Any] = {"stereo": StereoConfig, "masks": MaskConfig}
HELP = {"stereo": "stereo backend", "masks": "mask backend"}


class FlagError(Exception):
    """Flags the command line refuses; `lines` holds one message per flag."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class BackendFlag:
    selector: str  # "stereo" or "masks"
    config: type[BackendConfig]
    field: str  # e.g. "valid_iters"
    flag: str  # e.g. "--valid-iters"

    @property
    def backend(self) -> str:
        return backend_name(self.config)

    @property
    def param(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def is_switch(self) -> bool:
        return _without_none(self.config.model_fields[self.field].annotation) is bool

    @property
    def spelled(self) -> str:
        """As declared for click: a bool field is a --x/--no-x switch."""
        return f"{self.flag}/--no-{self.flag.removeprefix('--')}" if self.is_switch else self.flag


def backend_flags() -> list[BackendFlag]:
    return [
        BackendFlag(selector, cls, field, flag)
        for selector, union in SELECTORS.items()
        for cls in config_classes(union)
        for field, flag in cls.cli_flags.items()
    ]


def parameters() -> list[inspect.Parameter]:
    """--stereo, --masks, then every backend's flags: keyword-only parameters for a command signature."""
    params = []
    for selector, union in SELECTORS.items():
        names = tuple(backend_name(c) for c in config_classes(union))
        default = PseudoLabelConfig.model_fields[selector].get_default(call_default_factory=True).name
        option = typer.Option(help=f"{HELP[selector]}; its own flags are in the panel named after it")
        params.append(_keyword(selector, Annotated[Literal[names], option], default))
    for f in backend_flags():
        info = f.config.model_fields[f.field]
        kind = _without_none(info.annotation)
        if get_origin(kind) is tuple:  # a list field (sam3's classes) is one comma-separated string here
            kind = str
        default = info.get_default(call_default_factory=True)
        option = typer.Option(
            f.spelled,
            help=info.description or f.field.replace("_", " "),
            # the config's default, shown as such (the flag itself defaults to None: "not given")
            show_default=False if default is None else _shown(f.flag, default),
            rich_help_panel=f"--{f.selector} {f.backend}",
        )
        params.append(_keyword(f.param, Annotated[kind | None, option], None))
    return params


def backend_configs(values: dict[str, Any]) -> tuple[StereoConfig, MaskConfig]:
    """The selected backends' configs from a command's parsed `parameters()` values.

    Raises:
        FlagError: a flag of a backend that is not selected, or a value its config refuses.
    """
    flags = [f for f in backend_flags() if values.get(f.param) is not None]
    foreign = [
        f"{f.spelled} belongs to --{f.selector} {f.backend} (selected: {values[f.selector]})"
        for f in flags
        if f.backend != values[f.selector]
    ]
    if foreign:
        raise FlagError(foreign)
    return (
        _validate(TypeAdapter(StereoConfig), "stereo", values, flags),
        _validate(TypeAdapter(MaskConfig), "masks", values, flags),
    )


C = TypeVar("C")


def _validate(adapter: TypeAdapter[C], selector: str, values: dict[str, Any], flags: list[BackendFlag]) -> C:
    name = values[selector]
    given = {f.field: values[f.param] for f in flags if f.selector == selector}
    try:
        return adapter.validate_python({"name": name, **given})
    except ValidationError as err:
        # loc is (backend name, field) in a discriminated union; a model-level check names no field
        flag_of = {f.field: f.flag for f in flags if f.selector == selector}
        lines = []
        for e in err.errors():
            field = str(e["loc"][1]) if len(e["loc"]) > 1 else ""
            lines.append(f"{flag_of.get(field, f'--{selector} {name}')}: {e['msg']}")
        raise FlagError(lines) from None


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        (kind,) = (a for a in get_args(annotation) if a is not type(None))
        return kind
    return annotation


def _shown(flag: str, default: Any) -> str:
    if isinstance(default, bool):
        return flag.removeprefix("--") if default else f"no-{flag.removeprefix('--')}"
    return str(default)
