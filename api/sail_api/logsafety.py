"""Keep credentials out of logs whatever the verbosity.

botocore and urllib3 log whole request headers (session tokens, signatures) at DEBUG.
Every entry point calls `quiet_credential_loggers()` after configuring logging, so that
`-v` / `--log-level DEBUG` raises our own verbosity without turning those on.
"""

from __future__ import annotations

import logging

CREDENTIAL_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "kubernetes.client.rest")


def quiet_credential_loggers() -> None:
    for name in CREDENTIAL_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)
