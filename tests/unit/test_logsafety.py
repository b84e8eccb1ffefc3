"""Verbose logging must not turn on the loggers that print request headers (credentials)."""

import logging

from sail_api.logsafety import CREDENTIAL_LOGGERS, quiet_credential_loggers


def test_debug_root_logging_keeps_credential_loggers_at_info(caplog):
    root = logging.getLogger()
    old_levels = {name: logging.getLogger(name).level for name in CREDENTIAL_LOGGERS}
    old_root = root.level
    try:
        root.setLevel(logging.DEBUG)
        for name in CREDENTIAL_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        quiet_credential_loggers()
        with caplog.at_level(logging.DEBUG):
            logging.getLogger("botocore.endpoint").debug("headers: X-Amz-Security-Token=canary")
            logging.getLogger("tests.logsafety").debug("our own debug line")
        assert "canary" not in caplog.text
        assert "our own debug line" in caplog.text
    finally:
        root.setLevel(old_root)
        for name, level in old_levels.items():
            logging.getLogger(name).setLevel(level)
