"""pytest plugin standing in for vLLM's ``tests/conftest.py`` in the scheduler tests.

vLLM's own ``tests/conftest.py`` imports its whole test stack (tblib, HF runners, the
assets, ``tests.models``...), none of which the scheduler tests use. Run them with
``--noconftest -p vllm_offline`` (this folder on PYTHONPATH): this plugin gives the few
pieces they do use, copied from vLLM 0.33.0's ``tests/conftest.py``:

* the ``caplog_vllm`` fixture (and ``temporary_enable_log_propagate``);
* the ``optional`` marker skip (``--optional`` to run them);
* the autouse ``cleanup_fixture`` (``cleanup_dist_env_and_memory()`` after each test
  not marked ``skip_global_cleanup``) and ``dynamo_reset``, as in vLLM's CI.

It also checks, once, that ``vllm`` is the installed package and not a source tree.
"""

import logging
import os

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--optional", action="store_true", default=False, help="run optional test"
    )


def pytest_configure(config):
    import vllm

    where = os.path.dirname(vllm.__file__)
    if "site-packages" not in where and "dist-packages" not in where:
        raise pytest.UsageError(f"vllm imported from {where}, not the installed wheel")
    config.stash[_VLLM_KEY] = f"{vllm.__version__} from {where}"


_VLLM_KEY = pytest.StashKey[str]()


def pytest_report_header(config):
    return f"vllm {config.stash.get(_VLLM_KEY, '?')}"


def pytest_collection_modifyitems(config, items):
    if config.getoption("--optional"):
        return
    skip_optional = pytest.mark.skip(reason="need --optional option to run")
    for item in items:
        if "optional" in item.keywords:
            item.add_marker(skip_optional)


@pytest.fixture()
def should_do_global_cleanup_after_test(request) -> bool:
    return not request.node.get_closest_marker("skip_global_cleanup")


@pytest.fixture(autouse=True)
def cleanup_fixture(should_do_global_cleanup_after_test: bool):
    yield
    if should_do_global_cleanup_after_test:
        from vllm.distributed import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()


@pytest.fixture(autouse=True)
def dynamo_reset():
    yield
    import torch

    torch._dynamo.reset()


@pytest.fixture()
def temporary_enable_log_propagate(monkeypatch):
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    monkeypatch.setitem(DEFAULT_LOGGING_CONFIG["loggers"]["vllm"], "propagate", True)
    monkeypatch.setattr(logging.getLogger("vllm"), "propagate", True)


@pytest.fixture()
def caplog_vllm(temporary_enable_log_propagate, caplog):
    with caplog.at_level(logging.INFO):
        yield caplog
