"""Calling user functions: keywords by binding name, a thread pool for sync code, one log line.

A function that names a ``context`` parameter also gets an ``azure.functions.Context``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import azure.functions as func

# The abstract trace and retry context types are only published in this module.
from azure.functions import _abc as azf_abc

from devhost.discovery import FunctionSpec

log = logging.getLogger(__name__)

TRIGGER_LABELS = {
    "httpTrigger": "http",
    "blobTrigger": "blob",
    "timerTrigger": "timer",
    "serviceBusTrigger": "servicebus",
    "orchestrationTrigger": "orchestrator",
    "activityTrigger": "activity",
}


class _TraceContext(azf_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{os.urandom(8).hex()}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(azf_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._count = retry_count
        self._max = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return self._max

    @property
    def exception(self) -> azf_abc.RpcException:
        raise AttributeError("the devhost does not keep the previous attempt's exception")


class InvocationContext(func.Context):
    """The ``context`` argument of one invocation."""

    def __init__(
        self,
        *,
        invocation_id: str,
        function_name: str,
        function_directory: str,
        retry_count: int = 0,
        max_retry_count: int = 0,
    ) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace = _TraceContext()
        self._retry = _RetryContext(retry_count, max_retry_count)
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> azf_abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> azf_abc.RetryContext:
        return self._retry


def _wants_context(spec: FunctionSpec) -> bool:
    try:
        params = inspect.signature(spec.user_function).parameters
    except (TypeError, ValueError):
        return False
    binding_names = {str(b.get("name")) for b in spec.bindings}
    for name, param in params.items():
        if name in binding_names:
            continue
        if name == "context" or param.annotation in (func.Context, "func.Context"):
            return True
    return False


class Invoker:
    """Runs user functions: coroutines on the event loop, plain functions in a thread pool.

    Args:
        thread_count: threads for sync functions (``PYTHON_THREADPOOL_THREAD_COUNT``).
        function_directory: reported as ``context.function_directory``.
    """

    def __init__(self, thread_count: int, function_directory: str) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=thread_count, thread_name_prefix="devhost-function"
        )
        self._function_directory = function_directory
        # Whether each function takes ``context``, by name: reading a signature costs more
        # than the rest of an invocation's set-up.
        self._wants_context: dict[str, bool] = {}
        # The Durable client binding value, passed to functions that declare one.
        self.durable_client: str | None = None

    async def call(
        self,
        spec: FunctionSpec,
        trigger_value: Any,
        *,
        invocation_id: str,
        retry_count: int = 0,
        max_retry_count: int = 0,
        extra: dict[str, Any] | None = None,
        inline: bool = False,
    ) -> Any:
        """Invoke ``spec`` with its trigger value; returns what the function returned.

        ``extra`` holds values of its other bindings, by name (the Durable client).
        ``inline`` runs a plain function on the calling thread instead of the pool: for
        short CPU-only work (an orchestrator replay), which a thread would only make wait
        for the interpreter lock.

        Raises:
            Exception: whatever the function raised.
        """
        kwargs: dict[str, Any] = {spec.trigger_name: trigger_value, **(extra or {})}
        if spec.durable_client and self.durable_client is not None:
            kwargs[spec.durable_client] = self.durable_client
        wants_context = self._wants_context.get(spec.name)
        if wants_context is None:
            wants_context = self._wants_context[spec.name] = _wants_context(spec)
        if wants_context:
            kwargs["context"] = InvocationContext(
                invocation_id=invocation_id,
                function_name=spec.name,
                function_directory=self._function_directory,
                retry_count=retry_count,
                max_retry_count=max_retry_count,
            )
        target = spec.user_function
        if inspect.iscoroutinefunction(target):
            return await target(**kwargs)
        if inline:
            result = target(**kwargs)
            return (await result) if inspect.isawaitable(result) else result
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        result = await loop.run_in_executor(
            self._executor, functools.partial(ctx.run, target, **kwargs)
        )
        if inspect.isawaitable(result):
            result = await result
        return result

    def shutdown(self, *, wait: bool) -> None:
        """Stop the thread pool; ``wait=False`` leaves running sync functions to finish alone."""
        self._executor.shutdown(wait=wait, cancel_futures=True)


def new_invocation_id() -> str:
    """A fresh invocation id (a UUID, as the Functions host uses)."""
    return str(uuid.uuid4())


def log_invocation(
    spec: FunctionSpec,
    invocation_id: str,
    started: float,
    outcome: str,
    *,
    failed: bool = False,
    **fields: Any,
) -> None:
    """Write the one log line of an invocation.

    Args:
        spec: the function invoked.
        invocation_id: its invocation id.
        started: ``time.monotonic()`` when it began.
        outcome: ``ok``, ``failed`` or the HTTP status.
        failed: log at WARNING instead of INFO.
        **fields: more structured fields (blob name, attempt, route).
    """
    extra = {
        "function": spec.name,
        "invocation_id": invocation_id,
        "trigger": TRIGGER_LABELS.get(spec.trigger_type, spec.trigger_type),
        "duration_ms": int((time.monotonic() - started) * 1000),
        "outcome": outcome,
        **fields,
    }
    log.log(logging.WARNING if failed else logging.INFO, "invocation", extra=extra)
