"""Engines: a list of Dask tasks run on a local cluster, a running cluster, a Client, or
Dask's local schedulers, results in order; a task whose future fails is handed to
``on_error``."""

from __future__ import annotations

import os
import re
import sys

from ..errors import DyadsimError

__all__ = ["SCHEDULERS"]

SCHEDULERS = ("processes", "threads", "synchronous")


class _Engine:
    """Runs a list of (func, args) tasks on a Dask scheduler; returns results in order.

    A task whose Dask future itself fails (a worker died) gives ``on_error(index, exc)``.
    """

    #: seconds to wait for a remote scheduler to answer before giving up
    connect_timeout = 10.0

    def __init__(self, scheduler=None, workers=None, progress=True):
        self.scheduler = scheduler
        self.workers = workers
        self.progress = progress
        self.client = None
        self.cluster = None
        self.own = False
        self.kind = None

    def __enter__(self):
        sch = self.scheduler
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise DyadsimError(f"workers must be a positive integer, got {self.workers!r}")
        if sch in SCHEDULERS:
            self.kind = sch
            return self
        from distributed import Client

        if isinstance(sch, Client):
            self.client, self.kind = sch, "client"
            return self
        if sch is None or sch == "local":
            from distributed import LocalCluster

            n = self.workers or os.cpu_count() or 1
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=40)
            self.client = Client(self.cluster)
            self.own, self.kind = True, f"LocalCluster({n} workers)"
            return self
        if isinstance(sch, str) and re.fullmatch(r"[A-Za-z0-9+.:/\[\]_-]{1,300}", sch):
            try:
                self.client = Client(sch, timeout=f"{self.connect_timeout:g}s")
            except (OSError, TimeoutError) as exc:
                raise DyadsimError(
                    f"cannot reach the Dask scheduler at {sch!r} within {self.connect_timeout:g} s "
                    f"({type(exc).__name__}: {exc}); is it running? (scheduler=None starts a "
                    "local cluster)") from None
            self.own, self.kind = True, f"cluster at {sch}"
            return self
        raise DyadsimError(
            f"scheduler must be None (a local cluster), a scheduler address like "
            f"'tcp://host:8786', a distributed.Client, or one of {', '.join(SCHEDULERS)}; got {sch!r}")

    def __exit__(self, *exc):
        if self.own:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()

    @property
    def n_workers(self) -> int:
        if self.client is not None:
            return len(self.client.scheduler_info().get("workers", {})) or 1
        if self.kind == "synchronous":
            return 1
        return self.workers or os.cpu_count() or 1

    def map(self, func, args_list, shared, on_error, desc="Monte Carlo"):
        """``func(*args, *shared)`` for each args in args_list (shared sent once)."""
        if self.client is not None:
            return self._map_distributed(func, args_list, shared, on_error, desc)
        import dask

        # wrap the shared objects once, untraversed: dask would otherwise walk (and, for
        # pure tasks, hash) the whole circuit IR once per task -- about a second each
        shared_d = [dask.delayed(obj, traverse=False) for obj in shared]
        call = dask.delayed(_guarded, pure=False, traverse=False)
        tasks = [call(func, i, on_error, *args, *shared_d) for i, args in enumerate(args_list)]
        kw = {"scheduler": self.kind}
        if self.kind != "synchronous" and self.workers:
            kw["num_workers"] = self.workers
        if self.progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(minimum=0.5, out=sys.stderr):
                return list(dask.compute(*tasks, **kw))
        return list(dask.compute(*tasks, **kw))

    def _map_distributed(self, func, args_list, shared, on_error, desc):
        from distributed import as_completed

        client = self.client
        shared_f = client.scatter(list(shared), broadcast=True)
        futures = [client.submit(func, *args, *shared_f, pure=False) for args in args_list]
        index = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(futures)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(futures), desc=desc, unit="run")
        try:
            for fut in as_completed(futures):
                i = index[fut.key]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 -- worker lost, task crashed
                    results[i] = on_error(i, exc)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results


def _guarded(func, i, on_error, *args):
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001
        return on_error(i, exc)
