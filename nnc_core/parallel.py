"""Ordered parallel work with bounded memory: the one thread pool of the codec.

Encoding and decoding are sequences of independent jobs (one NDU, or one
block's NDUs) whose results must come out in stream order.  The C coder and
the quantizers release the GIL, so threads give real parallelism without
copying tensors between processes.  A job is taken from the input only when
the window has room (see :func:`ordered_map`), which bounds memory by the
largest jobs in flight, not by the model.

The output never depends on the worker count: every job gets all it needs
when it is made, and results (and the first error) are delivered in the
order the jobs were made, unless the caller asks for them as they end (a
writer whose format takes its entries in any order).
"""

from __future__ import annotations

import heapq
import numbers
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NoReturn, TypeVar

from nnc_core.errors import ConfigError

__all__ = ["default_workers", "check_workers", "ordered_map", "FanOut"]

T = TypeVar("T")


def default_workers() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers`` validated; None means :func:`default_workers`."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ConfigError(f"workers {workers!r} must be a positive integer (1: no threads)")
    return int(workers)


def _raiser(error: BaseException) -> Callable[[], NoReturn]:
    def job() -> NoReturn:
        raise error

    return job


def ordered_map(
    jobs: Iterable[Callable[[], T]],
    workers: int,
    *,
    lookahead: int = 1,
    max_jobs: int = 4096,
    ordered: bool = True,
) -> Iterator[T]:
    """Run ``jobs`` (callables without arguments) on ``workers`` threads and
    yield their results in the jobs' order (``ordered=False``: as they end).

    Jobs are drawn from ``jobs`` lazily: ``workers + lookahead`` in flight,
    and more (``max_jobs`` at most) while the others in flight add up to
    less than twice the largest one (a job's ``cost`` attribute, e.g. its
    elements; 1 if it has none).  One large tensor therefore does not leave
    the other threads idle, and what is in flight stays under about three
    times the largest job plus one more.  ``max_jobs`` bounds only the
    per-job overhead (a model of many tiny tensors behind a large one): set
    low, it would idle the other threads while a large job runs, as 64 did
    on all-MiniLM-L6-v2, whose word embedding (half the model) comes before
    ninety smaller tensors.  Of the jobs drawn, a free thread starts the
    costliest (the earliest of equal ones): two large tensors among small
    ones run side by side rather than one after the small ones, which
    would leave a thread idle at the end.

    In order, an exception raised by a job, or by the iterable while making
    the next job, is raised here in its place, after every earlier result
    has been yielded.  Unordered, the first failure to end is raised, and
    the results not yet yielded are dropped.  Either way, jobs still running then are
    waited for and no job is started after it.  With ``workers == 1`` the
    jobs run one after another on the calling thread, in order.
    """
    if workers <= 1:
        for job in jobs:
            yield job()
        return
    source = iter(jobs)
    # drawn, result not yet yielded, with its cost; in the jobs' order
    pending: dict[Future[T], int] = {}
    unstarted: list[tuple[int, int, Callable[[], T], Future[T]]] = []  # a heap: the costliest first
    ended: queue.SimpleQueue[Future[T]] = queue.SimpleQueue()  # unordered: futures as they end
    lock = threading.Lock()
    limit = workers + max(0, lookahead)
    drawn = 0
    exhausted = False

    def room() -> bool:
        if len(pending) < limit:
            return True
        costs = list(pending.values())
        return len(pending) < max_jobs and sum(costs) - max(costs) < 2 * max(costs)

    def start_one() -> None:
        # one run per job drawn, each taking the costliest job not yet started
        with lock:
            _, _, job, future = heapq.heappop(unstarted)
        if not future.set_running_or_notify_cancel():
            return  # cancelled: an error ended the map
        try:
            future.set_result(job())
        except BaseException as e:  # noqa: BLE001 - delivered by the map
            future.set_exception(e)
        if not ordered:
            ended.put(future)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nnc") as pool:
        try:
            while True:
                while not exhausted and room():
                    try:
                        job = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    except Exception as e:  # noqa: BLE001 - delivered in order below
                        job, exhausted = _raiser(e), True
                    cost = max(1, int(getattr(job, "cost", 1)))
                    future: Future[T] = Future()
                    with lock:
                        heapq.heappush(unstarted, (-cost, drawn, job, future))
                    drawn += 1
                    pending[future] = cost
                    pool.submit(start_one)
                if not pending:
                    return
                # in order: the earliest drawn; unordered: the next to end (an error ends the map)
                first = next(iter(pending)) if ordered else ended.get()
                del pending[first]
                yield first.result()
        finally:
            # an error or a consumer that stopped early: nothing more starts
            for future in pending:
                future.cancel()


class FanOut:
    """Helper threads that share the pieces of one job (a tensor's block rows)
    with the thread running it.

    The job's own thread is one of the workers: it takes pieces like the
    helpers do, so the job finishes even when every helper is busy with
    another job's pieces, and it waits only for helpers already running a
    piece, which wait for nothing.  A job of :func:`ordered_map` may
    therefore fan out from inside that pool without risking a deadlock,
    which waiting on futures of its own pool would (all its threads could
    be waiting).  ``workers - 1`` helpers at most, shared by every job of
    one decode.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._pool = (
            ThreadPoolExecutor(max_workers=self.workers - 1, thread_name_prefix="nnc-piece")
            if self.workers > 1
            else None
        )

    def run(self, pieces: Sequence[Callable[[], T]]) -> list[T]:
        """Results of ``pieces`` in their order; the first piece's error (in
        the pieces' order) is raised once every piece has ended."""
        n = len(pieces)
        results: list[T | None] = [None] * n
        errors: list[BaseException | None] = [None] * n
        lock = threading.Lock()
        taken = 0

        def drain() -> None:
            # every piece runs even after one failed: which error is raised
            # then does not depend on the threads' timing
            nonlocal taken
            while True:
                with lock:
                    if taken == n:
                        return
                    i = taken
                    taken += 1
                try:
                    results[i] = pieces[i]()
                except BaseException as e:  # noqa: BLE001 - re-raised by run() in order
                    errors[i] = e

        helpers = [self._pool.submit(drain) for _ in range(min(self.workers - 1, n - 1))] if self._pool else []
        try:
            drain()
        finally:
            for future in helpers:
                if not future.cancel():  # running: it ends once the pieces are taken
                    future.result()
        for error in errors:
            if error is not None:
                raise error
        return results  # type: ignore[return-value]  # every piece ran without error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
