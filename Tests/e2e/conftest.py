"""Fixtures for the Gatehouse end-to-end suite (see ghtest.py for the helpers).

- ``gatehouse_bin``: the binary, from $GATEHOUSE_BIN or `swift build --show-bin-path`.
- ``gatehouse``: function-scoped factory: ``gatehouse(start=True, *serve_args, env_master_key=None)``
  returns a ``ghtest.Gatehouse`` (a fresh data dir, master key file path and HOME), started
  unless ``start=False``. Every instance is stopped at teardown.
- ``module_gatehouse``: the same factory, module-scoped, for servers shared by a module.
- ``registry``: the session-wide canary registry.
"""

from __future__ import annotations

import os

import pytest

import ghtest


@pytest.fixture(scope="session")
def gatehouse_bin():
    try:
        path = ghtest.locate_binary()
    except Exception as e:  # pragma: no cover - environment problem
        pytest.fail(f"cannot locate the gatehouse binary: {e}")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"gatehouse binary not found at {path} (build it with `swift build --product gatehouse` "
                    f"or set GATEHOUSE_BIN)")
    return path


@pytest.fixture(scope="session")
def registry():
    return ghtest.REGISTRY


@pytest.fixture(scope="session", autouse=True)
def _kill_leftovers():
    yield
    ghtest.kill_all()


def _factory(binary, tmp_path_factory, instances):
    def make(start: bool = True, *serve_args: str, env_master_key: str | None = None) -> ghtest.Gatehouse:
        inst = ghtest.Gatehouse(binary, tmp_path_factory.mktemp("gh"), env_master_key=env_master_key)
        instances.append(inst)
        if start:
            inst.start(*serve_args)
        return inst

    return make


def _teardown(instances):
    errors = []
    for inst in instances:
        try:
            inst.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("; ".join(errors))


@pytest.fixture
def gatehouse(gatehouse_bin, tmp_path_factory):
    instances: list[ghtest.Gatehouse] = []
    yield _factory(gatehouse_bin, tmp_path_factory, instances)
    _teardown(instances)


@pytest.fixture(scope="module")
def module_gatehouse(gatehouse_bin, tmp_path_factory):
    instances: list[ghtest.Gatehouse] = []
    yield _factory(gatehouse_bin, tmp_path_factory, instances)
    _teardown(instances)


@pytest.fixture(scope="module")
def inst(module_gatehouse):
    """The module's shared Gatehouse instance (a module may define its own instead)."""
    return module_gatehouse()


@pytest.fixture(scope="module")
def upstream():
    """The module's fake provider (`fake_upstream.FakeUpstream`)."""
    from fake_upstream import FakeUpstream

    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture
def upstream_stays_clean(upstream):
    """After a test: the fake provider saw no Gatehouse key and no request without a provider
    key. Modules that forward through the gateway use it on every test (`pytestmark`)."""
    before = len(upstream.violations)
    yield
    new = upstream.violations[before:]
    assert not new, "fake upstream violations:\n" + "\n".join(new)
