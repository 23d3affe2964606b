"""Run a grid's jobs — its cells and the base evaluation — in this process or as Ray tasks.

Why Ray (https://docs.ray.io): a grid is dozens of fine-tunes, each wanting a GPU, some reading another's
model (the perplexity-gap arm reads ``sft``'s). Ray gives each job a resource request (CPUs, GPUs, memory),
runs a job after the jobs it needs by passing their ``ObjectRef`` s as arguments (Ray's own dependency
tracking), restarts a job whose worker died (``max_retries``), and reaches from one machine to a cluster
without a change here. A hand-written process pool did none of the last two (and gained nothing on two
cores). Slurm users can start a Ray cluster inside an allocation (Ray's "Deploying on Slurm" guide).

Three ways to run, same jobs, same files:

* in this process, one job after another (``--jobs 1``, no ``--address``): no Ray import, no cluster;
* a local Ray instance started here (``--jobs N``): all cores and GPUs of this machine, at most N jobs at
  once (a custom resource ``steerlab_slot`` with N units, one per job);
* a running cluster (``--address auto`` or ``ray://HOST:PORT``): the grid file, its data and ``output_dir``
  must sit at the same path on every node (a shared file system), and steerlab must be installed there.

The engine knows nothing about grids: a job is a key, the keys it needs, and a resource request; ``work``
is a picklable callable that does the job given its key. A job that raises is reported (``Outcome.error``)
and the others go on; a job whose need failed is not started and says which need failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from steerlab.experiment.settings import Resources

log = logging.getLogger(__name__)

SLOT = "steerlab_slot"  # the custom resource that caps a local Ray run at --jobs jobs at once
PROBE_TIMEOUT_S = 5.0  # how long to wait for a cluster's port, then for its gRPC handshake
CLIENT_TIMEOUT_S = 10.0  # how long a ray:// connection may take before it counts as unreachable
GIB = 2**30


class EngineError(RuntimeError):
    """The engine cannot start: a cluster that cannot be reached, or a request no node can satisfy."""


@dataclass(frozen=True)
class Job:
    key: str
    needs: tuple[str, ...] = ()  # keys of jobs that must finish first (only those in the same run)
    resources: Resources = Resources()


@dataclass
class Outcome:
    key: str
    ok: bool
    error: str | None = None  # "ExceptionType: message" of a failed job
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ requests


def cpus_for(resources: Resources, *, jobs: int, on_cluster: bool) -> float:
    """A job's CPU request: the configured one, else all cores / ``jobs`` here, else 1 on a cluster."""
    if resources.cpus is not None:
        return resources.cpus
    return 1.0 if on_cluster else float(max(1, (os.cpu_count() or 1) // jobs))


def _threads(cpus: float) -> int:
    return max(1, int(cpus))


def _unsatisfiable(
    jobs: Sequence[Job], nodes: Sequence[dict[str, float]], cpus: dict[str, float], where: str
) -> None:
    """Raise naming every job whose request no node in ``nodes`` (Ray resource dicts) can satisfy."""

    def fits(job: Job, node: dict[str, float]) -> bool:
        memory = job.resources.memory_gb
        return (
            node.get("CPU", 0.0) >= cpus[job.key]
            and node.get("GPU", 0.0) >= job.resources.gpus
            and (memory is None or node.get("memory", 0.0) >= memory * GIB)
        )

    bad = [job for job in jobs if not any(fits(job, node) for node in nodes)]
    if not bad:
        return
    largest = ", ".join(
        f"[{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU, {n.get('memory', 0) / GIB:.1f} GiB]"
        for n in nodes
    )
    asks = "; ".join(
        f"{job.key} asks for {cpus[job.key]:g} CPU, {job.resources.gpus:g} GPU"
        + (f", {job.resources.memory_gb:g} GiB memory" if job.resources.memory_gb is not None else "")
        for job in bad
    )
    raise EngineError(
        f"{len(bad)} job(s) ask for more than any node of {where} has, so nothing was started: {asks}. "
        f"Nodes: {largest or 'none'}. Lower `resources` in the grid file (or per arm), or add a node that fits."
    )


def local_node() -> dict[str, float]:
    """This machine in Ray's terms: cores, visible GPUs, total memory (bytes)."""
    import psutil
    import torch

    return {
        "CPU": float(os.cpu_count() or 1),
        "GPU": float(torch.cuda.device_count()),
        "memory": float(psutil.virtual_memory().total),
    }


# ------------------------------------------------------------------------------------------ in process


def run_in_process(
    jobs: Sequence[Job], work: Callable[[str], Any], on_outcome: Callable[[Outcome], None]
) -> dict[str, Outcome]:
    """Every job here, in order (needs first); a failed job is recorded and its dependents are not run."""
    cpus = {job.key: cpus_for(job.resources, jobs=1, on_cluster=False) for job in jobs}
    _unsatisfiable(jobs, [local_node()], cpus, "this machine")
    import torch

    outcomes: dict[str, Outcome] = {}
    for job in jobs:
        outcome = _blocked(job, outcomes)
        if outcome is None:
            before = torch.get_num_threads()
            torch.set_num_threads(_threads(cpus[job.key]))
            start = time.perf_counter()
            try:
                work(job.key)
                outcome = Outcome(job.key, True, seconds=time.perf_counter() - start)
            except Exception as error:  # one failing cell must not stop the others; it is reported
                log.exception("%s failed", job.key)
                outcome = Outcome(
                    job.key, False, f"{type(error).__name__}: {error}", time.perf_counter() - start
                )
            finally:
                torch.set_num_threads(before)
        outcomes[job.key] = outcome
        on_outcome(outcome)
    return outcomes


def _blocked(job: Job, outcomes: dict[str, Outcome]) -> Outcome | None:
    failed = [need for need in job.needs if need in outcomes and not outcomes[need].ok]
    if not failed:
        return None
    return Outcome(job.key, False, f"not run: it needs {', '.join(failed)}, which failed")


# ------------------------------------------------------------------------------------------ Ray


def _run_job(work: Callable[[str], Any], key: str, threads: int, *needs: Any) -> dict[str, Any]:
    """The Ray task: one job in a worker process. ``needs`` are the results of the jobs it waited for."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s [{key}] %(name)s: %(message)s", force=True
    )
    start = time.perf_counter()
    work(key)
    return {"key": key, "seconds": time.perf_counter() - start, "pid": os.getpid()}


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast and clearly when ``HOST:PORT`` does not answer as a Ray server (Ray's own client retries for
    about a minute): a TCP connection first, then the gRPC handshake every Ray endpoint (client server, GCS)
    speaks — a port that accepts connections but is not Ray fails the second."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"--address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise EngineError(
            f"--address {address}: cannot reach a Ray cluster there ({error or type(error).__name__}); "
            "is `ray start --head` running on that host, and is the port open from here?"
        ) from None
    try:
        import grpc
    except ImportError:  # ray without its [client] extra: the TCP check is all we can do
        return
    channel = grpc.insecure_channel(hostport)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise EngineError(
            f"--address {address}: the port accepts connections but does not answer as a Ray server within "
            f"{timeout:g} s; check the port (Ray client: 10001, GCS: 6379)"
        ) from None
    finally:
        channel.close()


def start_local_ray(jobs: int) -> None:
    """A Ray instance on this machine: its cores and GPUs, ``jobs`` slots, no dashboard."""
    import ray

    ray.init(
        num_cpus=os.cpu_count() or 1,
        resources={SLOT: float(jobs)},
        include_dashboard=False,
        object_store_memory=128 * 2**20,  # jobs exchange file paths, not tensors
        log_to_driver=True,
    )


def connect(address: str | None, jobs: int) -> bool:
    """Connect to a cluster (``address``) or start a local instance; returns whether this call started the
    session (and should end it). Raises ``EngineError`` within seconds when the cluster cannot be reached."""
    import ray

    if ray.is_initialized():
        log.info("using the Ray session already running in this process")
        return False
    if address is None:
        start_local_ray(jobs)
        return True
    probe_address(address)
    try:
        if address.startswith("ray://"):
            _client_init_within(address, CLIENT_TIMEOUT_S)
        else:
            ray.init(address=address, log_to_driver=True)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as error:
        raise EngineError(f"--address {address}: could not connect to a Ray cluster: {error}") from None
    return True


def _client_init_within(address: str, timeout: float) -> None:
    """``ray.init("ray://...")`` with a deadline: Ray's client retries for about a minute on its own.

    The attempt runs in a daemon thread (a Ray client connection is plain gRPC, safe off the main thread);
    past the deadline it is abandoned and this raises ``TimeoutError``."""
    import threading

    import ray

    outcome: dict[str, BaseException] = {}

    def attempt() -> None:
        try:
            ray.init(address=address, log_to_driver=True)
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=attempt, name="ray-client-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(
            f"no Ray client server answered within {timeout:g} s (is the port Ray's client port?)"
        )
    if "error" in outcome:
        raise outcome["error"]


@contextlib.contextmanager
def ray_session(address: str | None, jobs: int) -> Iterator[None]:
    """Ray connected (or started) for the block; ended after it if this block started it."""
    owned = connect(address, jobs)
    try:
        yield
    finally:
        if owned:
            import ray

            ray.shutdown()


def _nodes() -> list[dict[str, float]]:
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def run_on_ray(
    jobs: Sequence[Job],
    work: Callable[[str], Any],
    on_outcome: Callable[[Outcome], None],
    *,
    address: str | None = None,
    jobs_at_once: int = 1,
) -> dict[str, Outcome]:
    """Every job as a Ray task, each after the tasks it needs; a request no node satisfies stops everything
    before any task starts (``EngineError``)."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    with ray_session(address, jobs_at_once):
        nodes = _nodes()
        with_slots = any(node.get(SLOT, 0) > 0 for node in nodes)
        on_cluster = address is not None or not with_slots
        cpus = {job.key: cpus_for(job.resources, jobs=jobs_at_once, on_cluster=on_cluster) for job in jobs}
        _unsatisfiable(jobs, nodes, cpus, f"the Ray cluster at {address}" if address else "this machine")
        task = ray.remote(_run_job)
        refs: dict[str, Any] = {}
        for job in jobs:
            options: dict[str, Any] = {
                "num_cpus": cpus[job.key],
                "num_gpus": job.resources.gpus,
                "max_retries": job.resources.max_retries,
                "retry_exceptions": False,  # a job's own error would repeat; a dead worker is retried
                "name": f"steerlab {job.key}",
            }
            if job.resources.memory_gb is not None:
                options["memory"] = int(job.resources.memory_gb * GIB)
            if with_slots:
                options["resources"] = {SLOT: 1.0}
            needs = [refs[need] for need in job.needs if need in refs]
            refs[job.key] = task.options(**options).remote(work, job.key, _threads(cpus[job.key]), *needs)
        log.info("%d job(s) submitted to Ray", len(refs))
        outcomes: dict[str, Outcome] = {}
        pending = {ref: key for key, ref in refs.items()}
        by_key = {job.key: job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    key = pending.pop(ref)
                    outcome = _blocked(by_key[key], outcomes)
                    if outcome is None:
                        try:
                            result = ray.get(ref)
                            outcome = Outcome(key, True, seconds=float(result["seconds"]))
                        except RayTaskError as error:
                            cause = error.cause if isinstance(error.cause, BaseException) else error
                            outcome = Outcome(key, False, f"{type(cause).__name__}: {cause}")
                        except RayError as error:  # the worker died more often than max_retries allows
                            outcome = Outcome(key, False, f"{type(error).__name__}: {error}")
                    if not outcome.ok:
                        log.error("%s failed: %s", key, outcome.error)
                    outcomes[key] = outcome
                    on_outcome(outcome)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
        return outcomes
