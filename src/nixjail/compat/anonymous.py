"""Anonymous callers of a compatibility front end, and how often they may submit.

Piston's and codapi's clients send no token, so an operator may let a front
end take requests without one (`compat.FRONT_END.anonymous`). Such a caller
submits as the fixed tenant `anonymous`, with the same limits and queue
bound as everyone, and each client address may make at most
`compat.anonymous_requests_per_minute` submitting requests (POST) a minute
on that front end; reads (a Judge0 client polling its token) are not counted,
as they cost nothing but a file read.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

import falcon

from nixjail.api.auth import ANONYMOUS_CALLER, Caller
from nixjail.api.errors import ApiError
from nixjail.api.schemas import FieldError

WINDOW_S = 60.0
# Addresses remembered at most; past it the idle ones are forgotten first.
MAX_TRACKED = 4096


class RateLimiter:
    """At most `per_minute` hits per key in any 60 s, in memory."""

    def __init__(self, per_minute: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float:
        """Count one hit of `key`: 0 when it is allowed, else the seconds until one is."""
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= MAX_TRACKED:
                    self._forget_idle(now)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(hits[0] + WINDOW_S - now, 0.001)
            hits.append(now)
            return 0.0

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, hits in self._hits.items()
                    if not hits or hits[-1] <= now - WINDOW_S]:
            del self._hits[key]
        while len(self._hits) >= MAX_TRACKED:  # every one busy: drop the oldest
            del self._hits[next(iter(self._hits))]


class AnonymousGate:
    """What a front end's resources carry as `anonymous` when it takes callers
    without a token: `nixjail.api.auth.AuthMiddleware` lets them through it."""

    def __init__(self, front_end: str, per_minute: int) -> None:
        self.front_end = front_end
        self.limiter = RateLimiter(per_minute)

    def admit(self, req: falcon.Request) -> Caller:
        """The anonymous caller, or 429 with Retry-After when its address
        submitted too often."""
        if req.method == "POST":
            address = req.remote_addr or "unknown"
            wait_s = self.limiter.hit(address)
            if wait_s:
                retry = math.ceil(wait_s)
                reason = (f"anonymous requests from {address} are limited to "
                          f"{self.limiter.per_minute} a minute; try again in {retry} s")
                raise ApiError(429, "too many requests", reason,
                               [FieldError(field="rate", reason=reason)],
                               headers={"Retry-After": str(retry)})
        return ANONYMOUS_CALLER
