"""Timer triggers: cron schedules (five fields, UTC, as ACR Tasks takes them), several per task.

    minute hour day-of-month month day-of-week      e.g. "0 */6 * * 1-5", "30 2 * * *"

`fire_timers(now)` runs every minute (services/tasks/functions.py, at second 5): each enabled timer of each
enabled task whose schedule matches that minute schedules one run. The minute is claimed first with a
create-only document (`timerFired:<task>:<trigger>:<yyyymmddHHMM>`), so two instances, or a retried tick,
fire it once; a process that dies between the claim and the run loses that one firing (at most once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos, Document
from services.platform.secrets import SecretBox
from services.tasks.queue import RunQueue

log = logging.getLogger("tasks")

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))  # minute hour day month weekday (Sunday 0, 7 too)


def _field(text: str, low: int, high: int, weekday: bool) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        if step_text and not step_text.isdigit():
            raise ValueError(f"bad step {step_text!r}")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError("a step must be at least 1")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise ValueError(f"bad range {body!r}")
            start, end = int(first), int(last)
        elif body.isdigit():
            start = int(body)
            end = high if step_text else start
        else:
            raise ValueError(f"bad value {body!r}")
        top = 7 if weekday else high
        if not (low <= start <= top and low <= end <= top and start <= end):
            raise ValueError(f"{body!r} is outside {low}-{high}")
        values.update(7 if weekday and v == 0 else v for v in range(start, end + 1, step))
    if weekday and 7 in values:
        values.add(0)
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(f"a schedule has five fields (minute hour day month weekday): {expression[:60]!r}")
        minutes, hours, days, months, weekdays = (
            _field(p, lo, hi, i == 4) for i, (p, (lo, hi)) in enumerate(zip(parts, _RANGES, strict=True))
        )
        return cls(minutes, hours, days, months, weekdays, any_day=parts[2] == "*", any_weekday=parts[4] == "*")

    def matches(self, moment: datetime) -> bool:
        moment = moment.astimezone(UTC)
        weekday = (moment.weekday() + 1) % 7  # cron: Sunday is 0
        day_ok = moment.day in self.days
        weekday_ok = weekday in self.weekdays
        # cron's rule: when both day fields are restricted, either one matching is enough
        both = not self.any_day and not self.any_weekday
        date_ok = (day_ok or weekday_ok) if both else (day_ok and weekday_ok)
        return moment.minute in self.minutes and moment.hour in self.hours and moment.month in self.months and date_ok


class TimerClaimDoc(Document):
    registry: str
    type: str = "timerFired"
    ttl: int = 7 * 86400


async def fire_timers(metadata: Cosmos, blobs: BlobStore, queue: RunQueue, box: SecretBox, now: datetime) -> int:
    """Schedule the runs of every timer due in `now`'s minute; how many were scheduled."""
    from services.management.store import RegistryStore
    from services.tasks.scheduling import RunRequestInvalid, schedule_task_run
    from services.tasks.store import TaskStore

    minute = now.astimezone(UTC).replace(second=0, microsecond=0)
    fired = 0
    for task in await TaskStore(metadata).with_timers():
        if task.status != "Enabled":
            continue
        for trigger in task.timerTriggers:
            if trigger.get("status", "Enabled") != "Enabled":
                continue
            if not CronSchedule.parse(str(trigger["schedule"])).matches(minute):
                continue
            claim = TimerClaimDoc(
                id=f"timerFired:{task.name}:{trigger['name']}:{minute:%Y%m%d%H%M}", registry=task.registry
            )
            if await metadata.create("registries", claim) is None:
                continue  # another instance (or an earlier tick) fired it
            registry = await RegistryStore(metadata).get_registry(task.registry)
            if registry is None:
                continue
            scheduled = minute.isoformat().replace("+00:00", "Z")
            try:
                await schedule_task_run(
                    metadata, blobs, queue, box, registry.registry, registry.loginServer, task,
                    timer={"timerTriggerName": trigger["name"], "scheduleOccurrence": scheduled},
                )  # fmt: skip
            except RunRequestInvalid as error:
                log.warning("timer %s of task %s/%s: %s", trigger["name"], task.registry, task.name, error)
                continue
            fired += 1
    return fired


# --- base image updates -------------------------------------------------------------------------------------
class BaseImageClaimDoc(Document):
    registry: str
    type: str = "baseImageFired"
    ttl: int = 30 * 86400


async def on_image_pushed(
    metadata: Cosmos, blobs: BlobStore, queue: RunQueue, box: SecretBox, registry: str, event: dict[str, object]
) -> int:
    """A push to `registry` (an event of the `tasks` bus subscription): run each task whose last run pulled
    that repository:tag at another digest. Once per (task, new digest), whatever the redeliveries; never for
    a digest the task itself pushed (a task that pushes its own base does not run itself in a loop).
    Returns how many runs were scheduled."""
    from services.management.store import RegistryStore
    from services.tasks.scheduling import RunRequestInvalid, schedule_task_run
    from services.tasks.store import RunStore, TaskStore

    target = event.get("target")
    if event.get("action") != "push" or not isinstance(target, dict) or not target.get("tag"):
        return 0
    repository, tag, digest = str(target["repository"]), str(target["tag"]), str(target.get("digest", ""))
    tasks = [t for t in await TaskStore(metadata).with_base_trigger(registry) if t.status == "Enabled"]
    scheduled = 0
    for task in tasks:
        if (task.baseImageTrigger or {}).get("status", "Enabled") != "Enabled":
            continue
        runs = await RunStore(metadata).list_runs(registry, 20, task.name)
        if any(image.get("digest") == digest for run in runs for image in run.outputImages):
            continue  # the task pushed this itself
        last = next((run for run in runs if run.baseImages), None)
        if last is None:
            continue  # never built: no base images known yet
        used = [
            b
            for b in last.baseImages
            if b.get("repository") == repository and b.get("tag") == tag and b.get("digest") not in (None, digest)
        ]
        if not used:
            continue
        claim = BaseImageClaimDoc(id=f"baseImageFired:{task.name}:{digest}", registry=registry)
        if await metadata.create("registries", claim) is None:
            continue  # this update already ran the task
        doc = await RegistryStore(metadata).get_registry(registry)
        if doc is None:
            return scheduled
        update = {
            "id": str(event.get("id", "")),
            "timestamp": str(event.get("timestamp", "")),
            "images": [{"registry": doc.loginServer, "repository": repository, "tag": tag, "digest": digest}],
        }
        try:
            await schedule_task_run(metadata, blobs, queue, box, registry, doc.loginServer, task, image_update=update)
        except RunRequestInvalid as error:
            log.warning("base image update of task %s/%s: %s", registry, task.name, error)
            continue
        scheduled += 1
    return scheduled
