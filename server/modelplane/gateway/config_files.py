"""Reading the gateway's YAML files into typed models, with errors that say where."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """The file cannot be used; the message names the file and the field."""


def validation_problems(err: ValidationError, root: str = "file") -> str:
    """One line: `field.path: what is wrong; ...`."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}" for e in err.errors()
    )


def read_yaml_model(path: Path, model: type[M]) -> M:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {validation_problems(err)}") from err
