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
    SyncWay,
    bypasses_proxy,
    fault_of,
    parse_proxy,
    plan_routes,
    sync_candidates,
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


SYNC_URLS = ["https://s.example:9443", "https://b.example"]


def _ways(book: RouteBook, proxy: ProxyEndpoint | None, *, last_good: str | None = None,
          now: float = 0.0, urls: list[str] = SYNC_URLS[:1]) -> list[str]:
    candidates = sync_candidates(urls, proxy, ())
    return [way.name for way in book.sync_ways(candidates, last_good=last_good, now=now)]


def test_the_sync_goes_the_way_push_goes() -> None:
    book = RouteBook()
    direct, proxied = "direct:https://s.example:9443", "proxy:https://s.example:9443"
    assert _ways(book, None) == [direct]
    # Never connected: the planned order, the proxy first.
    assert _ways(book, OPEN_PROXY) == [proxied, direct]
    assert _ways(book, OPEN_PROXY, last_good="direct:8883") == [direct, proxied]
    book.connected = Route("mqtts", "b.example", 443, OPEN_PROXY)
    assert _ways(book, OPEN_PROXY, last_good="direct:8883") == [proxied, direct]
    book.connected = Route("mqtts", "b.example", 8883)
    assert _ways(book, OPEN_PROXY, last_good="proxy:443") == [direct, proxied]


def test_through_a_proxy_every_url_is_tried_before_going_direct() -> None:
    """Push goes through the proxy: so does the sync, to the one port 443
    when the proxy refuses the HTTPS port, before any direct attempt."""
    book = RouteBook(connected=Route("mqtts", "b.example", 8883, OPEN_PROXY))
    assert _ways(book, OPEN_PROXY, urls=SYNC_URLS) == [
        "proxy:https://s.example:9443", "proxy:https://b.example",
        "direct:https://s.example:9443", "direct:https://b.example"]
    book.failed(PathFault.PROXY_PORT, port=9443, now=1.0)
    assert _ways(book, OPEN_PROXY, urls=SYNC_URLS, now=2.0) == [
        "proxy:https://b.example", "direct:https://s.example:9443", "direct:https://b.example"]


def test_the_way_the_last_sync_went_goes_first() -> None:
    book = RouteBook()
    book.sync_good = SyncWay("https://b.example")
    assert _ways(book, OPEN_PROXY, urls=SYNC_URLS)[0] == "direct:https://b.example"


def test_no_proxy_exempts_a_sync_url_by_its_host() -> None:
    ways = sync_candidates(SYNC_URLS, OPEN_PROXY, ("s.example",))
    assert [way.name for way in ways] == [
        "direct:https://s.example:9443", "proxy:https://b.example", "direct:https://b.example"]
    assert [way.port for way in ways] == [9443, 443, 443]


def test_what_the_sync_learns_the_push_knows_and_back() -> None:
    book = RouteBook()
    routes = plan_routes("b.example", (8883, 443), proxy=OPEN_PROXY)
    book.failed(PathFault.PROXY_DEAD, port=9443, now=0.0)  # learnt by a sync
    assert _names(book.order(routes, 1.0))[0] == "direct:8883"
    assert _ways(book, OPEN_PROXY, now=1.0) == ["direct:https://s.example:9443",
                                               "proxy:https://s.example:9443"]
    book.proxy_worked()
    book.failed(PathFault.PROXY_PORT, port=9443, now=2.0)  # Squid: CONNECT to 443 only
    assert _ways(book, OPEN_PROXY, now=3.0) == ["direct:https://s.example:9443"]
    assert _ways(book, OPEN_PROXY, now=3.0, urls=["https://b.example"]) == [
        "proxy:https://b.example", "direct:https://b.example"]
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


def test_backup_hosts_come_after_every_route_to_the_first_and_say_so() -> None:
    routes = plan_routes("b1.example", (8883, 443), proxy=OPEN_PROXY,
                         backup_hosts=("b2.example",), last_good="direct:443@b2.example")
    assert _names(routes) == [
        "direct:443@b2.example", "proxy:8883", "proxy:443", "direct:8883", "direct:443",
        "proxy:8883@b2.example", "proxy:443@b2.example", "direct:8883@b2.example"]
    assert routes[0].host == "b2.example"
    assert routes[0].kind == "fallback"


def test_a_sync_url_on_the_port_push_is_connected_on_goes_first() -> None:
    """443 only: push is on direct:443, so the one port's URL is proven;
    the HTTPS port, silent, is not tried first at every sync."""
    book = RouteBook(connected=Route("mqtts", "b.example", 443, primary=False))
    assert _ways(book, None, urls=SYNC_URLS) == [
        "direct:https://b.example", "direct:https://s.example:9443"]
    book.connected = Route("mqtts", "b.example", 443, OPEN_PROXY)
    assert _ways(book, OPEN_PROXY, urls=SYNC_URLS)[0] == "proxy:https://b.example"


def test_a_failed_way_is_not_the_first_any_more() -> None:
    book = RouteBook()
    book.sync_good = SyncWay("https://b.example")
    book.sync_failed(SyncWay("https://s.example:9443"))
    assert book.sync_good == SyncWay("https://b.example")
    book.sync_failed(SyncWay("https://b.example"))
    assert book.sync_good is None


def test_the_last_good_way_through_a_proxy_that_failed_since_is_not_first() -> None:
    """A proxy black-holed mid-session: push found it dead and went direct;
    the next sync does not wait for the dead proxy first."""
    book = RouteBook()
    book.sync_good = SyncWay("https://s.example:9443", OPEN_PROXY)
    book.failed(PathFault.PROXY_DEAD, port=443, now=10.0)
    book.connected = Route("mqtts", "b.example", 8883)
    assert _ways(book, OPEN_PROXY, now=11.0) == ["direct:https://s.example:9443",
                                                "proxy:https://s.example:9443"]
