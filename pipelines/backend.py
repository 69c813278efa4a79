"""Where the parallel fits of a command run: local processes, or a Dask cluster (``--backend dask --scheduler
ADDRESS|local``) through joblib's Dask backend around the fan-outs (grid searches, repeated fits)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LOCAL_WORKERS", "add_backend_arguments", "parallel_backend"]

log = logging.getLogger(__name__)

LOCAL_WORKERS = 2
"""Worker processes of the Dask cluster ``--scheduler local`` starts."""


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` (``local`` or ``dask``) and ``--scheduler`` (a Dask scheduler address, or ``local``)."""
    parser.add_argument("--backend", choices=["local", "dask"], default="local",
                        help="where parallel fits run: local processes, or a Dask cluster (needs dask[distributed])")
    parser.add_argument("--scheduler", default="local",
                        help=f"with --backend dask: a scheduler address (tcp://host:8786), or 'local' to start a "
                             f"cluster of {LOCAL_WORKERS} worker processes on 127.0.0.1")


@contextmanager
def parallel_backend(backend: str = "local", scheduler: str = "local") -> Iterator[None]:
    """Run the joblib fan-outs inside (``Parallel``, ``GridSearchCV(n_jobs=...)``) locally or on a Dask cluster.

    Parameters
    ----------
    backend : {"local", "dask"}
        ``local`` changes nothing; ``dask`` uses ``joblib.parallel_backend("dask")`` with a client of ``scheduler``.
    scheduler : str
        A Dask scheduler address, or ``local``: a ``LocalCluster`` of :data:`LOCAL_WORKERS` processes (one thread
        each) on the loopback interface, without dashboard, closed on exit.

    Raises
    ------
    ValueError
        For another backend, or ``dask`` without ``dask[distributed]`` installed.
    """
    if backend == "local":
        yield
        return
    if backend != "dask":
        raise ValueError(f"--backend must be 'local' or 'dask'; got {backend!r}")
    try:
        import joblib
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise ValueError(f"--backend dask needs dask[distributed] ({exc}); install it with "
                         "pip install 'cnn-transfer[dask]'") from exc
    if scheduler == "local":
        with LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster), joblib.parallel_backend("dask"):
            log.info("Dask: local cluster of %d workers at %s", LOCAL_WORKERS, cluster.scheduler_address)
            yield
        return
    with Client(scheduler), joblib.parallel_backend("dask"):
        log.info("Dask: scheduler %s", scheduler)
        yield
