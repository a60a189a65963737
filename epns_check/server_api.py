"""Steps 8 to 10 talk to the management server over HTTPS: ask it for a test
command, fetch the agent's sync resource, read its clock."""

from __future__ import annotations

import email.utils
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from epns.sync_contract import sync_path


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, with the error body's code and message when it has one."""

    status: int
    code: str
    message: str
    data: dict[str, Any]
    date: float | None


def _answer(response: httpx.Response) -> Answer:
    try:
        data = response.json()
    except ValueError:
        data = {}
    data = data if isinstance(data, dict) else {}
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    return Answer(response.status_code, str(error.get("code", "")),
                  str(error.get("message", response.reason_phrase)), data,
                  _date(response.headers.get("date")))


def _date(header: str | None) -> float | None:
    """The Date header as a timestamp; None when absent or not a date."""
    try:
        return email.utils.parsedate_to_datetime(header).timestamp() if header else None
    except (TypeError, ValueError):
        return None


def root_cause(exc: BaseException) -> BaseException:
    """The socket or TLS error under an httpx error, for diagnose."""
    seen = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, OSError):
            return seen
    if isinstance(exc, httpx.TimeoutException):
        return TimeoutError(str(exc) or "timed out")
    return exc


class ServerClient:
    """HTTPS to the server, trusting ``context``, optionally through a proxy."""

    def __init__(self, base_url: str, context: ssl.SSLContext, *, timeout: float,
                 proxy: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # Proxy variables were read once, at the edge, like the agent does.
        self._client = httpx.Client(base_url=self.base_url, verify=context, timeout=timeout,
                                    proxy=proxy, trust_env=False)

    def close(self) -> None:
        """Close the connections."""
        self._client.close()

    def ping(self, agent_id: str, api_token: str) -> Answer:
        """Ask the server to send the agent a signed test command."""
        return _answer(self._client.post(f"/api/v1/agents/{agent_id}/ping",
                                         headers={"Authorization": f"Bearer {api_token}"}))

    def sync(self, agent_id: str, token: str | None) -> Answer:
        """GET the agent's sync resource, as the agent (certificate or token)."""
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return _answer(self._client.get(sync_path(agent_id), headers=headers))

    def clock(self) -> tuple[float, float, str]:
        """The server's time, this machine's time at the middle of the request,
        and where the server's time came from."""
        before = time.time()
        answer = _answer(self._client.get("/api/v1/health"))
        middle = (before + time.time()) / 2
        stamp = answer.data.get("time")
        if isinstance(stamp, int | float):
            return float(stamp), middle, "/api/v1/health"
        if answer.date is None:
            raise ValueError("the server sent neither a time nor a Date header")
        # Date has whole seconds: up to a second of the skew is rounding.
        return answer.date, middle, "HTTP Date header"
