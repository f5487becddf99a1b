"""Config dataclasses <-> plain dicts (the JSON stored beside each component's weights)."""

import dataclasses
from typing import Any, TypeVar

from dglm_cli.errors import BundleError

C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build `cls` from `data`; unknown keys are an error (they mean a newer or foreign format)."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BundleError(f"{where}: unknown keys {unknown} for {cls.__name__}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as error:
        raise BundleError(f"{where}: invalid {cls.__name__}: {error}") from None
