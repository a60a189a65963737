"""epns.routes: the agent's ordered route plan, and NO_PROXY matching."""

from __future__ import annotations

import pytest

from epns.errors import (
    ConfigError,
    MqttRefused,
    ProxyAuthFailed,
    ProxyFailed,
    ProxyPortRefused,
    RouteError,
    TcpRefused,
    TcpTimeout,
    TlsFailed,
)
from epns.routes import (
    PORT_RETRY,
    PROXY_RETRY,
    PathFault,
    ProxyEndpoint,
    Route,
    RouteBook,
    bypasses_proxy,
    fault_of,
    parse_proxy,
    plan_routes,
)

PROXY = ProxyEndpoint("proxy.example", 3128, "fleet", "p@ss word")


def names(routes):
    return [route.name for route in routes]


def test_direct_only_tries_primary_then_fallback():
    routes = plan_routes("push.example", (8883, 443), proxy=None)
    assert names(routes) == ["direct:8883", "direct:443"]
    assert [route.kind for route in routes] == ["primary", "fallback"]


def test_proxy_first_then_direct_then_websocket():
    routes = plan_routes("push.example", (8883, 443), proxy=PROXY,
                         websocket_url="wss://push.example:8443/mqtt")
    assert names(routes) == ["proxy:8883", "proxy:443", "direct:8883", "direct:443",
                             "proxy:wss", "direct:wss"]
    assert routes[-1].port == 8443
    assert routes[-1].path == "/mqtt"
    assert {route.kind for route in routes[:2]} == {"proxy"}
    assert routes[-1].kind == "websocket"


def test_last_good_route_goes_first_and_the_order_of_the_rest_is_kept():
    routes = plan_routes("push.example", (8883, 443), proxy=PROXY, last_good="direct:443")
    assert names(routes) == ["direct:443", "proxy:8883", "proxy:443", "direct:8883"]


def test_unknown_last_good_route_changes_nothing():
    routes = plan_routes("push.example", (8883, 443), proxy=None, last_good="proxy:8883")
    assert names(routes) == ["direct:8883", "direct:443"]


def test_no_proxy_skips_the_proxy_routes():
    routes = plan_routes("push.corp.example", (8883, 443), proxy=PROXY,
                         no_proxy=(".corp.example",))
    assert names(routes) == ["direct:8883", "direct:443"]


@pytest.mark.parametrize(("host", "entries", "expected"), [
    ("push.example", ("*",), True),
    ("push.example", ("push.example",), True),
    ("a.push.example", ("push.example",), True),
    ("a.push.example", (".push.example",), True),
    ("notpush.example", ("push.example",), False),
    ("127.0.0.1", ("127.0.0.0/8",), True),
    ("127.0.0.1", ("127.1.0.0/16",), False),
    ("PUSH.Example.", ("push.example",), True),
    ("push.example", ("", " "), False),
])
def test_no_proxy_matching(host, entries, expected):
    assert bypasses_proxy(host, entries) is expected


def test_proxy_url_keeps_credentials_quoted_and_never_names_them_in_routes():
    assert PROXY.url() == "http://fleet:p%40ss%20word@proxy.example:3128"
    routes = plan_routes("push.example", (8883,), proxy=PROXY)
    assert "p@ss" not in repr([route.name for route in routes])


def test_parse_proxy_reads_url_credentials_and_explicit_ones_win():
    parsed = parse_proxy("http://u%40x:pw@127.0.0.1:8080")
    assert (parsed.host, parsed.port, parsed.username, parsed.password) == (
        "127.0.0.1", 8080, "u@x", "pw")
    assert parse_proxy("http://u:pw@h:1", "other", "secret").username == "other"
    assert parse_proxy("http://h").port == 3128


@pytest.mark.parametrize("url", ["socks5://h:1080", "h:3128", "http://:3128", "http://h:99999"])
def test_parse_proxy_refuses_what_is_not_an_http_proxy(url):
    with pytest.raises(ConfigError):
        parse_proxy(url)


# --- the route book: one decision for push and sync ---------------------------------

OPEN_PROXY = ProxyEndpoint("proxy.example", 3128)


def _names(routes: list[Route]) -> list[str]:
    return [r.name for r in routes]


def test_a_refused_port_skips_that_port_through_the_proxy_only() -> None:
    book = RouteBook()
    routes = plan_routes("b.example", (8883, 443), proxy=OPEN_PROXY)
    book.failed(PathFault.PROXY_PORT, port=8883, now=0.0)
    assert _names(book.order(routes, 1.0)) == ["proxy:443", "direct:8883", "direct:443"]
    # Asked again once the refusal is old: a proxy's ACL may change.
    assert _names(book.order(routes, PORT_RETRY + 1)) == _names(routes)


@pytest.mark.parametrize("fault", [PathFault.PROXY_DEAD, PathFault.PROXY_CREDENTIALS])
def test_a_failed_proxy_goes_last_for_a_while_never_away(fault: PathFault) -> None:
    book = RouteBook()
    routes = plan_routes("b.example", (8883, 443), proxy=OPEN_PROXY)
    book.failed(fault, port=8883, now=0.0)
    assert _names(book.order(routes, 1.0)) == ["direct:8883", "direct:443", "proxy:8883",
                                               "proxy:443"]
    assert _names(book.order(routes, PROXY_RETRY)) == _names(routes)
    book.failed(fault, port=8883, now=100.0)
    book.proxy_worked()
    assert _names(book.order(routes, 101.0)) == _names(routes)


def test_the_sync_goes_the_way_push_goes() -> None:
    book = RouteBook()
    assert book.sync_ways(None, 9443, last_good=None, now=0.0) == [None]
    # Never connected: the planned order, the proxy first.
    assert book.sync_ways(OPEN_PROXY, 9443, last_good=None, now=0.0) == [OPEN_PROXY, None]
    assert book.sync_ways(OPEN_PROXY, 9443, last_good="direct:8883", now=0.0) == [None, OPEN_PROXY]
    book.connected = Route("mqtts", "b.example", 443, OPEN_PROXY)
    assert book.sync_ways(OPEN_PROXY, 9443, last_good="direct:8883", now=0.0) == [OPEN_PROXY, None]
    book.connected = Route("mqtts", "b.example", 8883)
    assert book.sync_ways(OPEN_PROXY, 9443, last_good="proxy:443", now=0.0) == [None, OPEN_PROXY]


def test_what_the_sync_learns_the_push_knows_and_back() -> None:
    book = RouteBook()
    routes = plan_routes("b.example", (8883, 443), proxy=OPEN_PROXY)
    book.failed(PathFault.PROXY_DEAD, port=9443, now=0.0)  # learnt by a sync
    assert _names(book.order(routes, 1.0))[0] == "direct:8883"
    assert book.sync_ways(OPEN_PROXY, 9443, last_good=None, now=1.0) == [None, OPEN_PROXY]
    book.proxy_worked()
    book.failed(PathFault.PROXY_PORT, port=9443, now=2.0)  # Squid: CONNECT to 443 only
    assert book.sync_ways(OPEN_PROXY, 9443, last_good=None, now=3.0) == [None]
    assert book.sync_ways(OPEN_PROXY, 443, last_good=None, now=3.0) == [OPEN_PROXY, None]
    book.failed(PathFault.UNREACHABLE, port=443, now=4.0)  # says nothing of the proxy
    assert book.proxy_usable(5.0)


@pytest.mark.parametrize(("error", "fault"), [
    (ProxyPortRefused("403"), PathFault.PROXY_PORT),
    (ProxyAuthFailed("407"), PathFault.PROXY_CREDENTIALS),
    (ProxyFailed("silent"), PathFault.PROXY_DEAD),
    (TcpRefused("refused"), PathFault.UNREACHABLE),
    (TcpTimeout("dropped"), PathFault.UNREACHABLE),
    (TlsFailed("intercepted"), None),
    (MqttRefused("connack 5"), None),
])
def test_fault_of_a_route_error(error: RouteError, fault: PathFault | None) -> None:
    assert fault_of(error) is fault
