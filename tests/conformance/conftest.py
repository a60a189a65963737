"""The MQTT 3.1.1 conformance suite's brokers: the epns broker admitting the
conformance identities to ``conformance/#`` by an ACL rule from its
configuration, and Mosquitto with the same rule, both with the dev PKI.

Each test carries ``@pytest.mark.mqtt("MQTT-x.y.z-n", ...)``, the normative
statements it checks, and runs against both brokers. A broker that deviates
is marked ``@pytest.mark.xfail_on(kind, reason)``: a strict xfail for that
broker only, so the suite fails the day it conforms (and the mark must go).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.wire import NAME_PREFIX, TOPIC_ROOT, Target
from tests.support.processes import ROOT, BrokerProcess, start_epns, start_mosquitto

BROKERS = ("epns", "mosquitto")
# The rule an integrator writes in broker.toml, as its environment variable.
RULES = [{"identities": [f"{NAME_PREFIX}*"], "access": "readwrite",
          "topics": [f"{TOPIC_ROOT}/#"]}]
# Its Mosquitto equivalent, beside the shipped contract ACL.
MOSQUITTO_RULE = f"pattern readwrite {TOPIC_ROOT}/#\n"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "mqtt(*statements): the MQTT 3.1.1 normative "
                            "statements (MQTT-x.y.z-n) a conformance test checks")
    config.addinivalue_line("markers", "xfail_on(broker, reason): the broker ('epns' or "
                            "'mosquitto') fails this conformance test, on purpose or not yet")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Statement ids become report properties; ``xfail_on`` becomes a strict
    xfail of that broker's case. With ``--fast`` (no processes) the suite is left out."""
    here = Path(__file__).parent
    if config.getoption("--fast"):
        left_out = [item for item in items if here in item.path.parents]
        items[:] = [item for item in items if here not in item.path.parents]
        config.hook.pytest_deselected(items=left_out)
        return
    for item in items:
        if here not in item.path.parents:
            continue
        statements = [s for mark in item.iter_markers("mqtt") for s in mark.args]
        if not statements:
            raise pytest.UsageError(f"{item.nodeid}: a conformance test names its statements "
                                    "with @pytest.mark.mqtt(...)")
        item.user_properties.append(("mqtt", " ".join(statements)))
        kind = getattr(item, "callspec", None) and item.callspec.params.get("target")
        for mark in item.iter_markers("xfail_on"):
            broker, reason = mark.args
            if broker == kind:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{broker}: {reason}"))


@pytest.fixture(scope="session")
def epns_conformance(pki_dir: Path) -> Iterator[BrokerProcess]:
    """The epns broker with the conformance rule in its configuration."""
    broker = start_epns(pki_dir, acl__rules=json.dumps(RULES))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mosquitto_conformance(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[BrokerProcess]:
    """Mosquitto with the shipped contract configuration and the same rule."""
    acl = MOSQUITTO_RULE + (ROOT / "docker/mosquitto/acl").read_text()
    broker = start_mosquitto(pki_dir, tmp_path_factory.mktemp("mosquitto-conformance"), acl=acl)
    yield broker
    broker.stop()


@pytest.fixture(params=BROKERS)
def target(request: pytest.FixtureRequest, pki_dir: Path) -> Target:
    """The broker under test."""
    broker: BrokerProcess = request.getfixturevalue(f"{request.param}_conformance")
    return Target(broker, pki_dir)
