"""The connection to the Ray cluster (``compute.address``): made once per process, on first use.

Only imported when ``compute.backend = "ray"``. The cluster's nodes run posttrain from the same
install as this process (a cluster on one machine, or nodes built from the same image); nothing is
shipped to them but the data and the functions the stages name.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import warnings
from collections.abc import Callable
from typing import Any

from posttrain import errors
from posttrain.errors import DependencyMissing, JobFailed, PosttrainError, Unavailable
from posttrain.settings import ComputeSettings

NAMESPACE = "posttrain"
_lock = threading.Lock()
_connected: str | None = None
_RAISED = re.compile(r"^posttrain\.errors\.(\w+): (.+)$", re.MULTILINE)  # a traceback's last line


def require_ray() -> Any:
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError:
        raise DependencyMissing(
            "compute.backend = ray needs Ray: pip install 'posttrain[ray]' (or set compute.backend = local)"
        ) from None
    return ray


def connect(settings: ComputeSettings) -> Any:
    """Connect this process to the cluster at ``settings.address`` (once); return the ``ray`` module."""
    global _connected
    ray = require_ray()
    with _lock:
        if ray.is_initialized():
            if _connected is not None and _connected != settings.address:
                raise Unavailable(
                    f"this process is connected to the Ray cluster at {_connected}; "
                    f"one process uses one cluster (compute.address is {settings.address})"
                )
            return ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        _probe(settings.address)
        try:
            ray.init(
                address=settings.address,
                namespace=NAMESPACE,
                log_to_driver=False,  # the workers' output belongs in the cluster's logs, not the user's terminal
                logging_level=logging.ERROR,
                configure_logging=True,
            )
        except ConnectionError as exc:
            raise Unavailable(
                f"no Ray cluster at compute.address = {settings.address!r} ({str(exc).splitlines()[0]}); "
                "start one with 'ray start --head', or set compute.backend = local"
            ) from None
        _connected = settings.address
        # imported first: importing ray.data sets its logger to DEBUG with a console handler of its own
        data = __import__("ray.data", fromlist=["DataContext"])
        for name in ("ray", "ray.data", "ray.train"):  # "execution finished" and the like are the cluster's business
            logging.getLogger(name).setLevel(logging.ERROR)
        # Ray Data's advice about its own operators ("only received 1 input", deprecations inside Ray) is
        # not the user's to act on
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        context = data.DataContext.get_current()
        context.enable_progress_bars = False  # posttrain shows its own progress (job rows, the CLI's bars)
        context.execution_options.preserve_order = True  # blocks come back in input order
        context.print_on_execution_start = False
        return ray


def _probe(address: str) -> None:
    """Refuse an address nothing listens on at once (Ray itself would retry for minutes)."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise Unavailable(
            f"no Ray cluster answers at compute.address = {address!r} ({exc.strerror or exc}); "
            "start one with 'ray start --head', or set compute.backend = local"
        ) from None


def disconnect() -> None:
    """Leave the cluster (tests switch clusters; the CLI never needs it)."""
    global _connected
    ray = require_ray()
    with _lock:
        if ray.is_initialized():
            ray.shutdown()
        _connected = None


def unwrap(exc: BaseException, what: str) -> PosttrainError:
    """Return the error to raise for a failure on the cluster: the stage's own error, else a one-line JobFailed."""
    cause = getattr(exc, "cause", None)
    while cause is not None and getattr(cause, "cause", None) is not None:
        cause = cause.cause
    if isinstance(cause, PosttrainError):
        return cause
    if isinstance(exc, PosttrainError):
        return exc
    raised = _raised_on_worker(str(exc))
    if raised is not None:
        return raised
    detail = str(cause if cause is not None else exc).strip().splitlines()
    line = next((d for d in reversed(detail) if d.strip()), type(exc).__name__)
    return JobFailed(f"{what} failed on the Ray cluster: {type(cause or exc).__name__}: {line[:300]}")


def gather(
    dataset: Any, total: int, *, what: str, progress: Callable[[int, int], None] | None = None, rows: int | None = None
) -> Any:
    """Run a Ray Dataset of Arrow blocks, calling ``progress(rows so far, total)`` as they come back.

    ``rows``: count progress every ``rows`` rows (the blocks Ray Data returns may be larger: it
    coalesces small ones); else once per block.

    Returns the blocks as one Arrow table (with no columns when there were none); a failure on
    the cluster is raised as one line naming ``what`` (see ``unwrap``).
    """
    import pyarrow as pa

    blocks, done = [], 0
    try:
        for block in dataset.iter_batches(batch_size=rows, batch_format="pyarrow", prefetch_batches=1):
            blocks.append(block)
            done += block.num_rows
            if progress is not None:
                progress(done, total)
    except Exception as exc:
        raise unwrap(exc, what) from None
    return pa.concat_tables(blocks, promote_options="default") if blocks else pa.table({})


def _raised_on_worker(text: str) -> PosttrainError | None:
    """Return the posttrain error a worker's traceback ends with: Ray Data keeps a UDF's traceback as text only."""
    found = _RAISED.findall(text)
    kind = getattr(errors, found[-1][0], None) if found else None
    if isinstance(kind, type) and issubclass(kind, PosttrainError):
        return kind(found[-1][1].strip())
    return None


def connected_to() -> str | None:
    """Return the address this process is connected to, if any."""
    return _connected
