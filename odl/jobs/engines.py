"""Where many independent jobs run: a local process pool or Ray tasks (one CPU each). The job function and its
arguments are the same on both; `done(result)` is called on the driver as each job finishes. Used by `odl sweep`
(one odl command per job) and `odl fleet` (one device's local training per job)."""
from __future__ import annotations

from odl.common.errors import OdlError

ENGINES = ("local", "ray")


def run_tasks(fn, items: list, engine: str = "local", address: str | None = None, n: int = 1, done=None):
    """fn(item) for every item, `n` at a time, calling done(result) in completion order. fn must be a module-level
    function (pickled to the workers) that reports its own failures in its result rather than raising."""
    if engine not in ENGINES:
        raise OdlError(f"unknown --engine '{engine}' (expected {' or '.join(ENGINES)})")
    if n < 1:
        raise OdlError(f"--jobs {n}: must be at least 1")
    if not items:
        return
    if engine == "ray":
        _run_ray(fn, items, address, n, done)
    else:
        _run_local(fn, items, n, done)


def _run_local(fn, items, n, done):
    # spawned, not forked, workers: a fork of a process whose torch/OpenMP threads are running can deadlock
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = [pool.submit(fn, it) for it in items]
        for f in as_completed(futs):
            done(f.result())


def _run_ray(fn, items, address, n, done):
    try:
        import ray
    except ImportError:
        raise OdlError("--engine ray needs Ray: pip install 'odl[ray]' (or pip install ray)") from None
    started = False
    if not ray.is_initialized():
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
            started = True
        except Exception as e:  # a wrong address, a cluster that is down
            raise OdlError(f"could not connect to Ray{' at ' + address if address else ''}: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        pending = [remote.remote(it) for it in items]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                done(ray.get(r))
    finally:
        if started:
            ray.shutdown()
