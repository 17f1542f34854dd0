"""Micro-batching: concurrent requests to one served entity become one model call.

Requests wait at most `max_wait_ms` for company, and only while other requests to the same entity
are still on their way (`reserve()`), so a lone client pays no wait. One thread per entity calls
the model, so while it works the next batch gathers. A failing batch is retried request by request,
so a bad request fails alone.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PredictFn = Callable[[pd.DataFrame, dict[str, Any] | None], Any]


@runtime_checkable
class Splittable(Protocol):
    """A batch output that cuts itself into one part per request (`split_rows` cuts the others)."""

    def split(self, lengths: list[int]) -> list[Any]: ...


@dataclass
class BatchStats:
    """Counters of one batcher: requests answered, rows predicted, model calls made."""

    requests: int = 0
    rows: int = 0
    model_calls: int = 0


@dataclass
class _Pending:
    frame: pd.DataFrame
    params: dict[str, Any] | None
    future: asyncio.Future[Any] = field(repr=False)


class MicroBatcher:
    """Coalesces `predict` calls made concurrently on one event loop into batched model calls."""

    def __init__(
        self, predict: PredictFn, *, name: str, max_wait_ms: float = 3.0, max_batch_rows: int = 4096
    ) -> None:
        self._predict = predict
        self.max_wait = max_wait_ms / 1000
        self.max_batch_rows = max_batch_rows
        self.stats = BatchStats()
        self._coming = 0
        self._open = 0  # requests reserved here and not answered yet
        self._idle = asyncio.Event()
        self._idle.set()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def drain(self) -> None:
        """Stop once every request reserved here has been answered (a replaced served entity
        finishes the requests routed to it before it goes)."""
        await self._idle.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop now: requests still waiting for an answer are cancelled. A model call still running
        (its request was cancelled) is awaited in a thread, so the event loop keeps serving."""
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    @contextmanager
    def reserve(self) -> Iterator[Callable[[pd.DataFrame, dict[str, Any] | None], Awaitable[Any]]]:
        """Announce a request as soon as it is routed here; yields its `predict`.

        A batch waits for company only while announced requests have not submitted yet.
        """
        self._coming += 1
        self._open += 1
        self._idle.clear()
        submitted = False

        async def predict(frame: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
            nonlocal submitted
            if not submitted:
                submitted = True
                self._coming -= 1
            return await self.predict(frame, params)

        try:
            yield predict
        finally:
            if not submitted:
                self._coming -= 1
            self._open -= 1
            if self._open == 0:
                self._idle.set()

    async def predict(self, frame: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """The model's output for `frame` alone, computed in a batch with concurrent requests."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(frame, params, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            await self._gather(batch)
            for group in _by_params(batch):
                await self._answer(group)

    async def _gather(self, batch: list[_Pending]) -> None:
        """Add queued requests to `batch` while more are queued or coming, within the wait and size bounds."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        rows = len(batch[0].frame)
        while rows < self.max_batch_rows:
            if self._queue.empty() and self._coming == 0:
                return
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                return
            batch.append(item)
            rows += len(item.frame)

    async def _answer(self, group: list[_Pending]) -> None:
        """One model call for the group; on failure one call per request, so errors stay their own."""
        loop = asyncio.get_running_loop()
        params = group[0].params
        try:
            frame = (
                group[0].frame if len(group) == 1 else pd.concat([p.frame for p in group], ignore_index=True)
            )
            output = await loop.run_in_executor(self._executor, self._call, frame, params)
            parts = split_rows(output, [len(p.frame) for p in group])
        except Exception as error:
            if len(group) == 1:
                _settle(group[0].future, error=error)
                return
            log.info("batch of %d requests failed (%s); retrying them one by one", len(group), error)
            for pending in group:
                await self._answer([pending])
            return
        self.stats.requests += len(group)
        for pending, part in zip(group, parts, strict=True):
            _settle(pending.future, result=part)

    def _call(self, frame: pd.DataFrame, params: dict[str, Any] | None) -> Any:
        self.stats.model_calls += 1
        self.stats.rows += len(frame)
        return self._predict(frame, params)


def _by_params(batch: list[_Pending]) -> list[list[_Pending]]:
    """Requests grouped by identical params (one model call takes one params object)."""
    groups: dict[str, list[_Pending]] = {}
    for pending in batch:
        groups.setdefault(json.dumps(pending.params, sort_keys=True, default=str), []).append(pending)
    return list(groups.values())


def split_rows(output: Any, lengths: list[int]) -> list[Any]:
    """Cut a batch's output back into one part per request, in order."""
    if len(lengths) == 1:
        return [output]
    if isinstance(output, Splittable):
        return output.split(lengths)
    if isinstance(output, pd.DataFrame | pd.Series):
        rows: Any = output.iloc
    elif isinstance(output, np.ndarray | list):
        rows = output
    else:
        raise TypeError(f"cannot split a model output of type {type(output).__name__} by request")
    if len(output) != sum(lengths):
        raise ValueError(f"the model returned {len(output)} rows for {sum(lengths)} inputs")
    return [rows[start:end] for start, end in itertools.pairwise(np.cumsum([0, *lengths]))]


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the request was cancelled (client gone)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
