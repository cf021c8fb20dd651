"""Limits, injected faults and counters: the part of the emulator tests turn knobs on.

``Settings`` holds every knob; the same names are command-line flags at start and keys of
``POST /_emulator/faults`` at run time. ``Limiter`` enforces the Outlook limits (requests in
flight per application, requests per mailbox per time window) and draws the random faults.
``Stats`` counts what was served.
"""

from __future__ import annotations

import copy
import random
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from exchange_fuse.emulator.errors import GraphError
from exchange_fuse.emulator.quirks import Quirks

# Statuses an error rate may name, with the code and message Graph gives for each.
INJECTABLE = {
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "The server received an invalid response upstream."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
    504: ("GatewayTimeout", "The gateway did not receive a response in time."),
    507: ("ErrorQuotaExceeded", "The mailbox is over its storage quota."),
}


@dataclass(slots=True)
class Settings:
    latency_ms: float = 0.0
    bandwidth_bytes_per_s: int = 0  # 0: unlimited
    error_rates: dict[int, float] = field(default_factory=dict)
    # Retry-After (seconds) on injected 5xx errors; None sends none.
    error_retry_after_s: int | None = None
    throttle_rate: float = 0.0
    throttle_retry_after_s: int = 2
    cut_rate: float = 0.0
    token_lifetime_s: int = 3600
    max_concurrency: int = 4
    mailbox_budget: int = 10_000
    budget_window_s: float = 600.0
    denied_mailboxes: set[str] = field(default_factory=set)
    disabled_mailboxes: set[str] = field(default_factory=set)
    delta_generations: int = 3
    seed: int | None = None
    quirks: Quirks = field(default_factory=Quirks)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of changes; unknown keys or bad values raise ValueError."""
        staged = copy.deepcopy(self)
        for key, value in changes.items():
            staged._set(key, value)
        for name in self.__slots__:
            setattr(self, name, getattr(staged, name))

    def _set(self, key: str, value: Any) -> None:
        if key == "error_rates":
            if not isinstance(value, dict):
                raise ValueError("error_rates must be an object of status to rate")
            rates = {}
            for status, rate in value.items():
                code = int(status)
                if code not in INJECTABLE:
                    raise ValueError(f"error_rates: {code} is not one of {sorted(INJECTABLE)}")
                rates[code] = _rate(rate, f"error_rates[{code}]")
            self.error_rates = rates
        elif key in ("denied_mailboxes", "disabled_mailboxes"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of addresses")
            setattr(self, key, {v.lower() for v in value})
        elif key == "quirks":
            if not isinstance(value, dict):
                raise ValueError("quirks must be an object of name to true/false")
            for name, enabled in value.items():
                if name == "special_ids":
                    raise ValueError("special_ids can only be set at start")
                self.quirks.set(name, bool(enabled))
        elif key in ("throttle_rate", "cut_rate"):
            setattr(self, key, _rate(value, key))
        elif key in ("error_retry_after_s", "seed"):
            setattr(self, key, None if value is None else _number(value, key, int))
        elif key in ("latency_ms", "budget_window_s"):
            setattr(self, key, _number(value, key, float))
        elif key in (
            "bandwidth_bytes_per_s",
            "token_lifetime_s",
            "max_concurrency",
            "mailbox_budget",
            "delta_generations",
            "throttle_retry_after_s",
        ):
            setattr(self, key, _number(value, key, int))
        else:
            raise ValueError(f"unknown setting {key!r}")

    def as_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s,
            "error_rates": {str(k): v for k, v in sorted(self.error_rates.items())},
            "error_retry_after_s": self.error_retry_after_s,
            "throttle_rate": self.throttle_rate,
            "throttle_retry_after_s": self.throttle_retry_after_s,
            "cut_rate": self.cut_rate,
            "token_lifetime_s": self.token_lifetime_s,
            "max_concurrency": self.max_concurrency,
            "mailbox_budget": self.mailbox_budget,
            "budget_window_s": self.budget_window_s,
            "denied_mailboxes": sorted(self.denied_mailboxes),
            "disabled_mailboxes": sorted(self.disabled_mailboxes),
            "delta_generations": self.delta_generations,
            "seed": self.seed,
            "quirks": self.quirks.as_dict(),
        }


def _rate(value: Any, name: str) -> float:
    rate = _number(value, name, float)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return rate


def _number(value: Any, name: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    number = kind(value)
    if number < 0:
        raise ValueError(f"{name} must not be negative")
    return number


class Stats:
    """Requests by route and status, bytes sent and the peak of requests in flight."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.bytes_sent = 0
        self.peak_in_flight = 0
        self.token_requests = 0
        self.cut_responses = 0
        # Requests inside JSON batches: counted by route too (Graph throttles each one), and
        # here, so that HTTP requests can be told from the work they asked for.
        self.batch_steps = 0
        self.started = time.monotonic()

    def count(self, route: str, status: int) -> None:
        self.requests[route][str(status)] += 1

    def as_json(self, in_flight: int) -> dict[str, Any]:
        by_status: dict[str, int] = defaultdict(int)
        total = 0
        for statuses in self.requests.values():
            for status, count in statuses.items():
                by_status[status] += count
                total += count
        return {
            "requests": {route: dict(s) for route, s in sorted(self.requests.items())},
            "requests_total": total,
            "http_requests": total - self.batch_steps,
            "batch_steps": self.batch_steps,
            "requests_by_status": dict(sorted(by_status.items())),
            "bytes_sent": self.bytes_sent,
            "peak_in_flight": self.peak_in_flight,
            "in_flight": in_flight,
            "token_requests": self.token_requests,
            "cut_responses": self.cut_responses,
            "seconds": round(time.monotonic() - self.started, 3),
        }


class Limiter:
    """Outlook's limits and the random faults, decided per request."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.in_flight: dict[str, int] = defaultdict(int)
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self.random = random.Random(settings.seed)

    def reseed(self) -> None:
        self.random = random.Random(self.settings.seed)

    def enter(self, application: str) -> None:
        """Admit a request of ``application`` or raise 429 (MailboxConcurrency)."""
        if self.in_flight[application] >= self.settings.max_concurrency:
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                retry_after=1,
            )
        self.in_flight[application] += 1
        total = sum(self.in_flight.values())
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, total)

    def leave(self, application: str) -> None:
        self.in_flight[application] -= 1

    def total_in_flight(self) -> int:
        return sum(self.in_flight.values())

    def check_mailbox(self, application: str, address: str) -> None:
        """Access policy, REST availability and the request budget of one mailbox."""
        key = address.lower()
        if key in self.settings.denied_mailboxes:
            raise GraphError(
                403,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly "
                "AccessPolicy settings.",
            )
        if key in self.settings.disabled_mailboxes:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "REST API is not yet supported for this mailbox.",
            )
        now = time.monotonic()
        window = self._windows[f"{application}\0{key}"]
        horizon = now - self.settings.budget_window_s
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= self.settings.mailbox_budget:
            wait = max(1, int(window[0] - horizon + 0.999))
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its RequestRate limit.",
                retry_after=wait,
            )
        window.append(now)

    def draw_faults(self) -> None:
        """A random 429 or 5xx, at the configured rates."""
        settings = self.settings
        if settings.throttle_rate and self.random.random() < settings.throttle_rate:
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its RequestRate limit.",
                retry_after=settings.throttle_retry_after_s,
            )
        for status, rate in settings.error_rates.items():
            if rate and self.random.random() < rate:
                code, message = INJECTABLE[status]
                raise GraphError(status, code, message, retry_after=settings.error_retry_after_s)

    def should_cut(self) -> bool:
        rate = self.settings.cut_rate
        return bool(rate) and self.random.random() < rate
