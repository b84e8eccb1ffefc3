"""The phase manifest written as `_SUCCESS.json`, last, to commit a phase or a shard."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from sail_api.spec import ApiModel

MANIFEST_SCHEMA_VERSION = 1


class FileEntry(ApiModel):
    path: str = Field(description="Path relative to the manifest's folder.")
    size: int = Field(ge=0, description="Size in bytes.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the content.")


class PhaseManifest(ApiModel):
    schema_version: int = Field(MANIFEST_SCHEMA_VERSION, description="Manifest format version.")
    run: str | None = Field(None, description="Run name.")
    iteration: int | None = Field(None, ge=0, description="Iteration.")
    phase: str | None = Field(None, description="Phase.")
    shard: str | None = Field(None, description="'k/n' for a shard.")
    spec_digest: str | None = Field(None, description="Digest of the algorithm spec the outputs came from.")
    created_at: str | None = Field(None, description="RFC 3339 commit time.")
    writer: str | None = Field(None, description="Host/pid/uuid of the committing process.")
    files: list[FileEntry] = Field(default_factory=list, description="Every file the commit covers.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Phase metrics.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Phase-specific facts.")
