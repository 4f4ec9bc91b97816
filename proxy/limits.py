"""Limits on clients, before and after authentication (DESIGN §5).

Plain bookkeeping with an injected clock so it is testable without sockets:
the frontend asks before accepting a connection and reports failed logins.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

PRE_AUTH_PACKET_LIMIT = 16 * 1024  # a HandshakeResponse with connect attributes fits easily
AUTH_TIMEOUT = 10.0  # seconds a client has to complete the login


@dataclass(frozen=True)
class LimitSettings:
    max_connections: int = 4096
    idle_timeout: float = 28800.0
    max_allowed_packet: int = 64 * 1024 * 1024
    pre_auth_packet_limit: int = PRE_AUTH_PACKET_LIMIT
    auth_timeout: float = AUTH_TIMEOUT
    max_auth_failures: int = 20  # failed logins per host within auth_failure_window ...
    auth_failure_window: float = 60.0
    auth_block_time: float = 60.0  # ... block that host for this long


class ClientLimits:
    """Connection count and failed-login throttling per client host."""

    def __init__(self, settings: LimitSettings):
        self.settings = settings
        self.connections = 0
        self._failures: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def admit(self, host: str, now: float) -> str | None:
        """None if a new connection from ``host`` may proceed, else why not."""
        if self.connections >= self.settings.max_connections:
            return "Too many connections"
        until = self._blocked_until.get(host)
        if until is not None:
            if now < until:
                return f"Host '{host}' is blocked for {until - now:.0f} s after {self.settings.max_auth_failures} failed logins"
            del self._blocked_until[host]
        return None

    def opened(self) -> None:
        self.connections += 1

    def closed(self) -> None:
        self.connections -= 1

    def auth_failed(self, host: str, now: float) -> None:
        q = self._failures.setdefault(host, deque())
        q.append(now)
        window = self.settings.auth_failure_window
        while q and now - q[0] > window:
            q.popleft()
        if len(q) >= self.settings.max_auth_failures:
            self._blocked_until[host] = now + self.settings.auth_block_time
            q.clear()

    def auth_succeeded(self, host: str) -> None:
        self._failures.pop(host, None)

    def idle_expired(self, last_activity: float, now: float) -> bool:
        return now - last_activity > self.settings.idle_timeout
