"""Connection-level limits of `zreward serve` that uvicorn does not provide on its own.

What uvicorn 0.54 offers (read from its source): `timeout_keep_alive` closes a connection idle *between* requests,
but the timer is armed only after a response and cancelled by any received byte, so a connection that sends nothing
(or trickles a request head) stays open forever; `limit_concurrency` answers 503 once open connections *or*
running requests reach N — idle connections included, `/health` included (measured: 530 idle connections made every
request get 503); `h11_max_incomplete_event_size` bounds a request head's size (16 KiB by default, kept).

What this module adds (the server runs uvicorn's h11 protocol, subclassed by `guarded_h11`):
- **header timeout**: a connection must deliver a complete request head within `header_timeout` seconds of opening
  or of its previous response, else it is closed (slow-loris and idle sockets cost at most that long);
- **per-client connection cap**: connections from one client address beyond `max_client_connections` are marked
  over the cap; `RequestLimits` answers 503 (with `Connection: close`) to every request on them except `/health`;
- **in-flight limit** (`RequestLimits`, replacing uvicorn's `limit_concurrency`): at most `limit_concurrency`
  requests run at once, counted in requests (idle connections cost nothing here), `/health` exempt — so health
  checks stay answered while the server is saturated.
"""
from __future__ import annotations

import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

OVER_CAP_KEY = "zreward_client_over_cap"  # set in the ASGI scope's "state" of requests on an over-cap connection
EXEMPT_PATHS = frozenset({"/health"})


def guarded_h11(header_timeout: float, max_client_connections: int) -> type[H11Protocol]:
    """An `H11Protocol` subclass with a header timeout and a per-client-address connection count (per server)."""
    per_client: dict[str, int] = {}

    class GuardedH11Protocol(H11Protocol):
        client_connections = per_client  # live count per client address (tests, diagnostics)
        _header_timer = None
        _host: str | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._host = self.client[0] if self.client else "?"
            per_client[self._host] = per_client.get(self._host, 0) + 1
            if per_client[self._host] > max_client_connections:
                self.app_state = {**self.app_state, OVER_CAP_KEY: True}  # this connection's copy only
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._host is not None:
                left = per_client.get(self._host, 1) - 1
                if left > 0:
                    per_client[self._host] = left
                else:
                    per_client.pop(self._host, None)
                self._host = None
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # a complete request head has arrived
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self.transport.close()

    return GuardedH11Protocol


class RequestLimits:
    """Pure ASGI middleware: 503 beyond `limit_concurrency` requests in flight, or on a connection over the
    per-client cap; paths in `EXEMPT_PATHS` are always served."""

    def __init__(self, app, limit_concurrency: int, max_client_connections: int):
        self.app, self.limit, self.per_client = app, limit_concurrency, max_client_connections
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            return await self.app(scope, receive, send)
        why = None
        if (scope.get("state") or {}).get(OVER_CAP_KEY):
            why = f"more than {self.per_client} open connections from this client (max_client_connections)"
        elif self.in_flight >= self.limit:
            why = f"{self.in_flight} requests in flight (limit_concurrency {self.limit})"
        if why is not None:
            resp = JSONResponse({"detail": f"server: busy, {why}; retry later"}, status_code=503,
                                headers={"Retry-After": "1", "Connection": "close"})
            return await resp(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
