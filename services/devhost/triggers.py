"""The devhost's non-HTTP side: timer triggers on their schedules, and bus triggers fed from the local bus.

Timer functions (`timerTrigger`) run on their NCRONTAB schedule (six fields, seconds first, as the Functions
host reads them). Service Bus topic functions (`serviceBusTrigger`) get the messages of their subscription
from the bus the settings name (storage queues on Azurite by default, or Service Bus): completed when the
function returns, abandoned with a growing delay when it raises (dead-lettered by the bus after N
deliveries), as the Functions host does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
from azure.functions.decorators.function_app import Function
from azure.functions.timer import TimerRequest

from services.platform.bus import Bus, ReceivedMessage, open_bus
from services.platform.settings import Settings

log = logging.getLogger("devhost")

MAX_IN_FLIGHT = 32  # messages handled at once per subscription
RECEIVE_BATCH = 16
ABANDON_DELAY_CAP_SECONDS = 60.0


# --- NCRONTAB ------------------------------------------------------------------------------------------
_FIELD_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))  # sec min hour day month weekday


def _field_values(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, last = body.split("-", 1)
            start, end = int(first), int(last)
        else:
            start = end = int(body)
            if step_text:
                end = high
        values.update(range(start, end + 1, step))
    return frozenset(v for v in values if low <= v <= high)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A six-field NCRONTAB expression: `{second} {minute} {hour} {day} {month} {day-of-week}`."""

    fields: tuple[frozenset[int], ...]

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(f"NCRONTAB needs six fields (seconds first): {expression!r}")
        return cls(tuple(_field_values(p, lo, hi) for p, (lo, hi) in zip(parts, _FIELD_RANGES, strict=True)))

    def next_after(self, moment: datetime) -> datetime:
        """The first time strictly after `moment` (whole seconds) that the schedule fires."""
        seconds, minutes, hours, days, months, weekdays = self.fields
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate + timedelta(days=366)
        while candidate < limit:
            if candidate.month not in months or candidate.day not in days:
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if (candidate.weekday() + 1) % 7 not in weekdays:  # NCRONTAB: Sunday is 0
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if candidate.hour not in hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if candidate.minute not in minutes:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
                continue
            if candidate.second not in seconds:
                candidate += timedelta(seconds=1)
                continue
            return candidate
        raise ValueError("the schedule never fires")


# --- the message a bus-triggered function receives -----------------------------------------------------
class LocalServiceBusMessage(func.ServiceBusMessage):
    """What the Functions host passes a Service Bus-triggered function, built from a local bus message."""

    def __init__(self, message: ReceivedMessage) -> None:
        super().__init__(body=message.body, content_type=message.content_type)
        self._local = message

    @property
    def message_id(self) -> str:
        return self._local.message_id

    @property
    def application_properties(self) -> dict[str, Any]:
        return dict(self._local.properties)

    @property
    def delivery_count(self) -> int:
        return self._local.delivery_count


# --- the runner ----------------------------------------------------------------------------------------
UserFunction = Callable[..., Awaitable[None]]


class TriggerRunner:
    """Runs the timer and Service Bus functions of a function table until stopped."""

    def __init__(self, settings: Settings, bus: Bus | None = None, timers: bool = True) -> None:
        """`timers`: run the timer functions too (the host runs each timer once per app, so only one worker
        process of the devhost does; every worker consumes the bus, as competing consumers)."""
        self._settings = settings
        self._bus = bus
        self._timers = timers
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self, functions: Iterable[Function]) -> None:
        for function in functions:
            trigger: Any = function.get_trigger()
            kind = trigger.get_binding_name()
            user_function: UserFunction = function.get_user_function()
            name = str(function.get_function_name())
            if kind == "timerTrigger" and self._timers:
                schedule = Schedule.parse(str(trigger.schedule))
                self._spawn(self._timer(name, schedule, bool(trigger.run_on_startup), user_function, trigger.name))
            elif kind == "serviceBusTrigger":
                if self._bus is None:
                    self._bus = open_bus(self._settings)
                    await self._bus.open()
                subscription = str(trigger.subscription_name)
                self._spawn(self._consume(name, subscription, user_function, trigger.name))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        self._tasks.append(asyncio.ensure_future(coroutine))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._bus is not None:
            await self._bus.close()
            self._bus = None

    async def _timer(
        self, name: str, schedule: Schedule, run_on_startup: bool, call: UserFunction, argument: str
    ) -> None:
        if run_on_startup:
            await self._run_timer(name, call, argument, past_due=False)
        while not self._stopping.is_set():
            now = datetime.now(UTC)
            due = schedule.next_after(now)
            await asyncio.sleep((due - now).total_seconds())
            late = (datetime.now(UTC) - due).total_seconds() > 1
            await self._run_timer(name, call, argument, past_due=late)

    @staticmethod
    async def _run_timer(name: str, call: UserFunction, argument: str, past_due: bool) -> None:
        try:
            await call(**{argument: TimerRequest(past_due=past_due)})
        except Exception:
            log.exception("timer function %s failed", name)

    async def _consume(self, name: str, subscription: str, call: UserFunction, argument: str) -> None:
        assert self._bus is not None
        bus = self._bus
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        while not self._stopping.is_set():
            try:
                messages = await bus.receive(subscription, max_messages=RECEIVE_BATCH, wait_seconds=1.0)
            except Exception:
                log.exception("receiving from subscription %s failed", subscription)
                await asyncio.sleep(1.0)
                continue
            for message in messages:
                await slots.acquire()
                task = asyncio.ensure_future(self._deliver(name, bus, message, call, argument))
                running.add(task)

                def finished(done: asyncio.Task[None]) -> None:
                    running.discard(done)
                    slots.release()

                task.add_done_callback(finished)

    @staticmethod
    async def _deliver(name: str, bus: Bus, message: ReceivedMessage, call: UserFunction, argument: str) -> None:
        try:
            await call(**{argument: LocalServiceBusMessage(message)})
        except Exception:
            delay = min(ABANDON_DELAY_CAP_SECONDS, 2.0**message.delivery_count)
            log.exception(
                "function %s failed on message %s; abandoned (retry in %.0fs)", name, message.message_id, delay
            )
            with contextlib.suppress(Exception):
                await bus.abandon(message, delay)
            return
        try:
            await bus.complete(message)
        except Exception:
            log.exception("completing message %s failed", message.message_id)
