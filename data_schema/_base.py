"""Base class every record in the data schema derives from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A frozen, strict record: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
