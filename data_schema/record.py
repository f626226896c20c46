"""`Record`: the base class of every record in the data schema (and of the CLI's configs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Record"]


class Record(BaseModel):
    """A frozen, strict record: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
