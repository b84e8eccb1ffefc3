"""How a store is reached besides its URI: the S3 endpoint and region, travelling as one object.

The run's connection is written once, in the resolved run (`ResolvedRun.storage`: run root,
endpoint, region), from `spec.storage`; every reader of the run or of its data (model folder,
seed pairs, prompts on S3) opens its store with `open_store(uri, connection)` and passes that
object along instead of two loose strings. Credentials are never part of it: they come from
the standard AWS environment (a Secret or IRSA on a cluster).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Connection(Protocol):
    """Anything with an S3 `endpoint` and `region` (either may be None: the AWS environment decides).

    `sail_api.resolved.StorageConnection` (the resolved run's storage) and
    `sail_api.spec.StorageSpec` (a SAILRun's `spec.storage`) are connections as they are.
    """

    @property
    def endpoint(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...


@dataclass(frozen=True)
class S3Connection:
    """A connection built from loose values (a command-line `--endpoint`, a state file)."""

    endpoint: str | None = None
    region: str | None = None


DEFAULT_CONNECTION = S3Connection()
