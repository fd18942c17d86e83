"""Dealing calls to the trainer actors: the one scheduler of `run`, `tune`, `flatness` and the
estimate.

The driver owns every decision — which call goes where, whether a failure is retried — and the
actors own the heavy work. At most ``IN_FLIGHT_PER_WORKER`` calls wait per actor, so the object
store never fills with queued work and a crash costs only the calls in flight. Calls go only to
trainers that have started: a replacement that the cluster has no room for (its node is gone for
good) just never gets any, and while no call is in flight the wait for a trainer to start is
bounded, so a run cannot hang on an actor that is never placed.

Trainers are named ``rashomon-<run>-<n>`` (``ray.util.list_named_actors``), so an operator can
find one, or evict it with ``ray.kill(ray.get_actor(name))``: its calls are retried.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import sys
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rashomon.engine.run._actor import PackTrainer
from rashomon.engine.run._plan import Pack
from rashomon.jobs import UserError

IN_FLIGHT_PER_WORKER = 2
MAX_ATTEMPTS = 3
START_TIMEOUT = 600.0  # seconds to wait for a trainer to start while no call is in flight
# a results folder that cannot take a pack's files cannot take any other's: retrying is futile
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


class RunFailed(Exception):
    """The run stopped before its end (the results folder cannot take more files); what is
    written stays, and running the same command again resumes."""


@dataclass(frozen=True)
class Task:
    """One call of a `PackTrainer` method for one pack: what the scheduler deals and retries
    (``pack``: the plan's pack, where there is one)."""

    pack_id: str
    method: str
    args: tuple
    pack: Pack | None = None


def training(pack: Pack) -> Task:
    return Task(pack.pack_id, "train", (pack,), pack)


class PackScheduler:
    """The trainer actors of one command and the loop that deals them tasks.

    ``trainer`` holds `PackTrainer`'s arguments; ``location`` names the results folder in errors.
    The trainers are killed when `run` returns or raises: left to the garbage collector they
    could hold their CPUs long after (a caught actor error's traceback holds this frame, and so
    every actor handle, in a reference cycle), starving the next run in the process."""

    def __init__(
        self,
        ray,
        workers: int,
        cpus: float,
        gpus: float,
        trainer: tuple,
        location: str,
    ) -> None:
        self.ray, self.cpus, self.gpus, self.location = ray, cpus, gpus, location
        actor_class = ray.remote(num_cpus=cpus, num_gpus=gpus)(PackTrainer)
        names = (f"rashomon-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self.new_actor = lambda: actor_class.options(name=next(names)).remote(*trainer)
        self.actors: list = [None] * workers
        self.starting: dict = {}  # an actor's ready ref -> its slot in self.actors
        self.started: set[int] = set()  # slots whose actor has started
        self.start_error = ""
        for index in range(workers):
            self._start(index)

    def wait_started(self) -> None:
        """Block until every trainer has started (or failed to): the start-up that the
        estimate times."""
        while self.starting:
            self._started(self._next({}))

    def run(
        self,
        tasks: Iterable[Task],
        *,
        refill: Callable[[], list[Task]] | None = None,
        on_done: Callable[[Task, dict], None] | None = None,
        give_up: Callable[[Task, str], None] | None = None,
        fatal: tuple[type[Exception], ...] = (),
    ) -> None:
        """Run ``tasks``; ``refill`` (called whenever a worker would idle) may hand in more.
        ``on_done`` hears of every task that returned, with what it returned; ``give_up`` of a
        task that failed `MAX_ATTEMPTS` times (by default that ends the command). An error
        raised by a task whose cause is one of ``fatal`` ends the command at once."""
        try:
            self._run(deque(tasks), refill, on_done, give_up or _stop, fatal)
        finally:
            for actor in self.actors:
                self.ray.kill(actor)

    def _run(self, queue: deque, refill, on_done, give_up, fatal) -> None:
        in_flight: dict = {}
        attempts: Counter[str] = Counter()
        load: Counter[int] = Counter()
        while True:
            if refill is not None and len(queue) < len(self.actors):
                queue.extend(refill())
            if not queue and not in_flight:
                return
            for index in sorted(self.started):
                actor = self.actors[index]
                while queue and load[index] < IN_FLIGHT_PER_WORKER:
                    task = queue.popleft()
                    in_flight[getattr(actor, task.method).remote(*task.args)] = (task, index, actor)
                    load[index] += 1
            ref = self._next(in_flight)
            if ref in self.starting:
                self._started(ref)
                continue
            task, index, actor = in_flight.pop(ref)
            load[index] -= 1
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.RayActorError:
                self._replace_actor(index, actor)
                reason = "its worker died"
            except self.ray.exceptions.RayTaskError as error:
                cause = getattr(error, "cause", None)
                if isinstance(cause, fatal):
                    raise cause from None
                self._stop_if_unwritable(cause)
                reason = _short(error)
            else:
                if on_done is not None:
                    on_done(task, outcome)
                continue
            self._retry_or_give_up(task, reason, attempts, queue, give_up)

    def _retry_or_give_up(self, task: Task, reason: str, attempts, queue, give_up) -> None:
        """Queue ``task`` again, or give it up after `MAX_ATTEMPTS`."""
        attempts[task.pack_id] += 1
        if attempts[task.pack_id] < MAX_ATTEMPTS:
            queue.append(task)
        else:
            give_up(task, f"failed {MAX_ATTEMPTS} times; last: {reason}")

    def _start(self, index: int) -> None:
        self.actors[index] = self.new_actor()
        self.starting[self.actors[index].__ray_ready__.remote()] = index

    def _next(self, in_flight: dict):
        """The next call or trainer start to finish. Calls in flight always finish or fail (a
        lost node fails its actor's calls); with none in flight only a start can come, and the
        cluster may never have room for it."""
        waiting = [*in_flight, *self.starting]
        if not waiting:
            raise UserError(
                f"no trainer is running and none has started ({self.start_error}); run the "
                "same command again to resume"
            )
        timeout = None if in_flight else START_TIMEOUT
        ready, _ = self.ray.wait(waiting, num_returns=1, timeout=timeout)
        if not ready:
            free = self.ray.available_resources()
            raise UserError(
                f"no trainer is running and none has started in {START_TIMEOUT:.0f} s: the "
                f"cluster has no room for one; each needs {self.cpus} CPUs and {self.gpus} "
                f"GPUs, the cluster has {free.get('CPU', 0)} CPUs and {free.get('GPU', 0)} "
                "GPUs free: add nodes or lower resources.cpus_per_worker / gpus_per_worker, then "
                "run again to resume"
            )
        return ready[0]

    def _started(self, ref) -> None:
        """Let a started trainer take calls. One that died before starting is not replaced (it
        never held a call, so no retry budget bounds its replacements): its slot stays empty.

        A trainer whose start raised (an import error in the worker, a failing constructor)
        fails alike on every node, so while no trainer runs that error ends the run at once."""
        index = self.starting.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayActorError as error:
            if not error.actor_init_failed:
                self.start_error = f"last failure: {_short(error)}"
                return
            failure = _startup_failure(str(error))
            if not self.started:
                raise UserError(f"the trainers cannot start: {failure}") from None
            self.start_error = f"a trainer failed to start: {failure}"
        else:
            self.started.add(index)

    def _stop_if_unwritable(self, cause: BaseException | None) -> None:
        """Stop the run when the results folder cannot take a pack's files (disk full, quota,
        read-only): every other pack would fail the same way, and be recorded as failed."""
        if isinstance(cause, OSError) and cause.errno in UNWRITABLE:
            raise RunFailed(
                f"{self.location}: cannot write the results ({os.strerror(cause.errno)}); "
                "make room or fix the folder's permissions, then run the same command again to "
                "resume"
            )

    def _replace_actor(self, index: int, dead) -> None:
        """Replace a dead actor once, however many of its calls report its death."""
        if self.actors[index] is dead:
            self.ray.kill(dead, no_restart=True)
            self.started.discard(index)
            self._start(index)


def _stop(task: Task, reason: str) -> None:
    raise UserError(f"pack {task.pack_id}: {reason}")


def _short(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:500]


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


def _startup_failure(text: str) -> str:
    """The exception, and where it was raised, in the traceback text that Ray gives for an actor
    whose start failed. A file in the working directory is called out: Ray puts that folder first
    on every worker's import path, where a user's ``torch.py`` shadows the installed package."""
    lines = text.splitlines()
    frames = [(i, m) for i, line in enumerate(lines) if (m := _FRAME.match(line))]
    if not frames:
        return lines[-1][:500] if lines else "unknown error"
    last, frame = frames[-1]
    raised = [line for line in lines[last + 1 :] if line and not line[0].isspace()]
    exception = (raised[0] if raised else lines[-1]).strip()[:500]
    where = f"{frame['file']}, line {frame['line']}"
    if _is_users(frame["file"]):
        return (
            f"{exception} (raised in {where}, in the working directory, which Ray puts first on "
            "the workers' import path: if that file shadows an installed package, rename it or "
            "start rashomon from another folder)"
        )
    return f"{exception} (raised in {where})"


def _is_users(file: str) -> bool:
    """Whether ``file`` lies in the working directory but is neither ours nor installed."""
    import rashomon

    path = os.path.realpath(file)
    ours = os.path.realpath(os.path.dirname(rashomon.__file__))
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    return (
        path.startswith(os.path.realpath(os.getcwd()) + os.sep)
        and not path.startswith(ours + os.sep)
        and not any(path.startswith(p + os.sep) for p in installed)
    )
