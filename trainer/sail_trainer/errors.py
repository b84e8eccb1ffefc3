"""The trainer's error vocabulary and its mapping to `sail_api.phases.ExitCode`.

Three kinds of failure matter to the operator: a bad spec (never retried), bad data
(never retried) and transient infrastructure trouble (retried against the infra budget).
Everything else is an application failure (retried against the app budget). The mapping
happens once, at the CLI boundary (`classify_exit_code`); library code raises.
"""

from __future__ import annotations

from sail_api.phases import ExitCode
from sail_api.storage import BucketNotFound, StoragePermissionDenied, StorageUnavailable
from sail_trainer.data.errors import DataError


class TrainerError(Exception):
    """Base of trainer errors whose message names the field or file at fault and the fix."""

    exit_code: ExitCode = ExitCode.FAILURE


class BadSpecError(TrainerError):
    """The resolved spec is wrong or inconsistent with the run (e.g. a digest mismatch, a missing model)."""

    exit_code = ExitCode.BAD_SPEC


class BadDataError(TrainerError):
    """An input dataset or file is unreadable or has the wrong schema."""

    exit_code = ExitCode.BAD_DATA


class MissingInputError(TrainerError):
    """An upstream phase has not committed what this phase needs (retry after it has)."""

    exit_code = ExitCode.FAILURE


def classify_exit_code(exc: BaseException) -> ExitCode:
    """Exit code for an exception that escaped a phase (see the module docstring)."""
    if isinstance(exc, TrainerError):
        return exc.exit_code
    if isinstance(exc, DataError):
        return ExitCode.BAD_DATA
    if isinstance(exc, StorageUnavailable):
        return ExitCode.TRANSIENT
    if isinstance(exc, BucketNotFound | StoragePermissionDenied):
        return ExitCode.BAD_SPEC  # a missing bucket or refused credentials: no retry fixes it (docs/storage.md)
    return ExitCode.FAILURE
