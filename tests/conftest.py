"""Shared test configuration: real peers (moto S3, kmock Kubernetes) live in tests/peers."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.peers.s3", "tests.peers.kube"]
ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so that `-p no:xdist` runs accept the mark under --strict-markers.
    config.addinivalue_line("markers", "xdist_group(name): keep the module's tests on one xdist worker")


@cache
def _module_is_grouped(path: str) -> bool:
    try:
        return "pytest.mark.xdist_group" in (ROOT / path).read_text()
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`-n N`: a module marked `xdist_group` runs on one worker, every other test is handed out alone.

    Such a module shares an expensive module-scoped fixture (a whole `sail run`); xdist's default
    "load" distribution splits a module's tests between workers, and the fixture then runs once per
    worker (seen: 70 s twice). `--dist loadgroup` would do this, but xdist 3.8 tags the grouped
    tests through `item._nodeid`, which pytest 9.2 no longer reads; the controller sees only node
    ids, so it reads the module's source for the mark.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if _module_is_grouped(path) else nodeid

    return ModuleGroupScheduling(config, log)
