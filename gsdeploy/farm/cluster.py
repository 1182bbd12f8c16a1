"""Run a sweep on an existing Ray cluster (the optional extra `gsdeploy[cluster]`).

Each device kind is a Ray custom resource `gsdeploy/<profile>`, one unit per device. A timing job
asks for one unit and is pinned by this driver to one live node offering it, so it runs only there
and never beside another timing job on that device. Deploy/export tasks (`prepare`) of a model
planned by FLOPs go to nodes without a device resource where there are any (the head, cheap
nodes); those whose plan is made on the target (the default, `plan: auto`) take a unit of its
device kind, as a timing job does. Their results travel through the object store to the device. A timing job that fails (its node lost, its worker killed,
an engine build error, a timeout) is tried again on another live node of its kind, up to
`spec.retries` more times; then it is recorded as failed with the reason, and the others go on.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.farm.ledger import Ledger
from gsdeploy.farm.local import describe_failure
from gsdeploy.farm.progress import SweepProgress
from gsdeploy.farm.spec import Job, SweepSpec
from gsdeploy.farm.stages import model_files, prepare, prepare_keys, prepare_targets, time_job, timing_task

RESOURCE_PREFIX = "gsdeploy/"
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")


def resource(profile: str) -> str:
    return RESOURCE_PREFIX + profile


def parse_address(text: str) -> tuple[str, str | None, int | None]:
    """--cluster value -> (address for ray.init, host, port); host/port None for 'auto'."""
    if text == "auto":
        return "auto", None, None
    rest = text[len("ray://"):] if text.startswith("ray://") else text
    host, sep, port = rest.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise GsdeployError(f"--cluster must be ray://HOST:PORT, HOST:PORT or auto, not {text!r}")
    return text, host.strip("[]"), int(port)


def connect(text: str) -> Any:
    """Connect this process to the Ray cluster as a driver; returns the ray module."""
    address, host, port = parse_address(text)
    try:
        import ray  # optional: the cluster extra
    except ImportError:
        raise MissingDependencyError("--cluster needs Ray: pip install 'gsdeploy[cluster]'") from None
    if host is not None:
        try:  # a wrong address would otherwise leave ray.init retrying for minutes
            socket.create_connection((host, port), timeout=5).close()
        except OSError as e:
            raise GsdeployError(f"cannot reach a Ray cluster at {host}:{port}: {e.strerror or e}") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, namespace="gsdeploy")
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ...
        raise GsdeployError(f"cannot connect to the Ray cluster at {text}: {describe_failure(e)}") from None
    return ray


def device_nodes(ray: Any) -> tuple[dict[str, dict[str, int]], list[str]]:
    """({profile: {node_id: device count}}, [live nodes without any gsdeploy/ resource])."""
    kinds: dict[str, dict[str, int]] = {}
    plain = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        mine = {k[len(RESOURCE_PREFIX):]: int(v) for k, v in n.get("Resources", {}).items()
                if k.startswith(RESOURCE_PREFIX) and v >= 1}
        for p, count in mine.items():
            kinds.setdefault(p, {})[n["NodeID"]] = count
        if not mine:
            plain.append(n["NodeID"])
    return kinds, plain


# The remote stages: the functions run on the nodes from the installed gsdeploy (every node needs
# the same version); failures of the stage itself come back as values, so the driver knows the node.


@dataclass
class _Outcome:
    node: str
    timed: Any = None
    error: str | None = None


def _timing_stage(task, prepared) -> _Outcome:  # noqa: ANN001 - runs inside a Ray task
    import ray  # optional: the cluster extra

    node = ray.get_runtime_context().get_node_id()
    try:
        return _Outcome(node, timed=time_job(task, prepared))
    except Exception as e:  # noqa: BLE001
        return _Outcome(node, error=describe_failure(e))


def _prepare_stage(entry, shape, targets, files):  # noqa: ANN001 - runs inside a Ray task
    return prepare(entry, shape, targets, files)


@dataclass
class _JobState:
    job: Job
    task: Any
    prep: tuple
    attempts: int = 0
    reasons: list[str] = field(default_factory=list)
    bad_nodes: set[str] = field(default_factory=set)


def _pick_node(state: _JobState, nodes: dict[str, int], busy: dict[str, int]) -> str | None:
    """A live node of the job's kind with a free device, preferring nodes it has not failed on; a
    node it failed on is used again only when no other node of the kind is alive."""
    free = [n for n, count in nodes.items() if busy.get(n, 0) < count]
    fresh = [n for n in free if n not in state.bad_nodes]
    if fresh:
        return fresh[0]
    if all(n in state.bad_nodes for n in nodes):
        return free[0] if free else None
    return None


def run_cluster(ray: Any, spec: SweepSpec, jobs: list[Job], ledger: Ledger, progress: SweepProgress,
                command: str, poll_s: float = 0.5) -> None:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # optional: the cluster extra

    timing_remote = ray.remote(num_cpus=0, max_retries=0)(_timing_stage)
    # max_retries: Ray re-runs a prepare whose node or output was lost (lineage reconstruction)
    prepare_remote = ray.remote(num_cpus=1, max_retries=3)(_prepare_stage)

    kinds, plain = device_nodes(ray)
    progress.set_nodes({p: len(kinds.get(p, {})) for p in spec.profiles})
    queues: dict[str, deque[_JobState]] = {p: deque() for p in spec.profiles}
    prep_refs: dict[tuple, Any] = {}
    prep_result: dict[tuple, str | None] = {}  # key -> None (ready) or the failure
    users: dict[tuple, int] = {}
    keys = prepare_keys(spec, jobs)
    targets = prepare_targets(spec, jobs, keys)
    for job in jobs:
        entry = job.entry
        key = keys[job]
        if key not in prep_refs:
            opts = {}
            if key[2] is not None:
                # the plan is made on the target (stages.prepare_keys): on a device of the job's
                # kind, holding it, so it is measured there and never beside a timing job
                opts["resources"] = {resource(key[2]): 1}
            elif plain:  # keep deploy/export off the devices while they time
                opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(plain[len(prep_refs) % len(plain)],
                                                                             soft=True)
            prep_refs[key] = prepare_remote.options(**opts).remote(entry, key[1], targets[key], ray.put(model_files(entry)))
        users[key] = users.get(key, 0) + 1
        queues[job.profile].append(_JobState(job, timing_task(spec, job, command), key))

    running: dict[Any, tuple[_JobState, str, float]] = {}  # ref -> (state, node, submitted)
    timed_out: set[Any] = set()
    busy: dict[str, int] = {}
    last_inventory = time.monotonic()

    def release(state: _JobState) -> None:
        users[state.prep] -= 1
        if users[state.prep] == 0:
            prep_refs.pop(state.prep, None)  # lets the object store drop the artifacts

    def fail(state: _JobState, reason: str) -> None:  # a job still in its queue
        if state.reasons:
            reason += f" (earlier attempts: {'; '.join(state.reasons)})"
        ledger.add_failure(state.job, reason, state.attempts)
        progress.move(state.job.profile, "queued", "failed")
        release(state)

    def retry_or_fail(state: _JobState, node: str, reason: str) -> None:
        state.reasons.append(reason)
        state.bad_nodes.add(node)
        if state.attempts <= spec.retries:
            queues[state.job.profile].appendleft(state)
            progress.move(state.job.profile, "running", "queued")
        else:
            ledger.add_failure(state.job, f"{reason} (after {state.attempts} attempts: {'; '.join(state.reasons)})",
                               state.attempts, node)
            progress.move(state.job.profile, "running", "failed")
            release(state)

    try:
        while any(queues.values()) or running:
            now = time.monotonic()
            if now - last_inventory > 2.0:
                kinds, plain = device_nodes(ray)
                progress.set_nodes({p: len(kinds.get(p, {})) for p in spec.profiles})
                last_inventory = now
            # jobs whose kind has no live node would wait forever: record them instead
            for p, q in queues.items():
                if q and not kinds.get(p):
                    while q:
                        s = q.popleft()
                        fail(s, f"no live node of the cluster offers the resource {resource(p)} "
                                f"(join one with ray start --resources '{{\"{resource(p)}\": 1}}')")
            # deploy/export results
            for key, ref in list(prep_refs.items()):
                if key in prep_result:
                    continue
                ready, _ = ray.wait([ref], timeout=0)
                if ready:
                    try:
                        ray.get(ref)
                        prep_result[key] = None
                    except Exception as e:  # noqa: BLE001
                        prep_result[key] = f"deploy/export failed: {describe_failure(getattr(e, 'cause', None) or e)}"
            # submit what can run now
            for p, q in queues.items():
                for state in list(q):
                    if state.prep not in prep_result:
                        continue
                    if prep_result[state.prep] is not None:
                        q.remove(state)
                        fail(state, prep_result[state.prep])
                        continue
                    node = _pick_node(state, kinds.get(p, {}), busy)
                    if node is None:
                        continue
                    q.remove(state)
                    state.attempts += 1
                    ref = timing_remote.options(
                        resources={resource(p): 1},
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                    ).remote(state.task, prep_refs[state.prep])
                    running[ref] = (state, node, time.monotonic())
                    busy[node] = busy.get(node, 0) + 1
                    progress.move(p, "queued", "running")
            if not running:
                time.sleep(poll_s)
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_s)
            for ref in ready:
                state, node, _t = running.pop(ref)
                busy[node] -= 1
                try:
                    out: _Outcome = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - node lost, worker killed, cancelled, unschedulable
                    reason = (f"timed out after {spec.timeout_s:g} s" if ref in timed_out
                              else f"lost on node {node[:12]}: {describe_failure(e)}")
                    retry_or_fail(state, node, reason)
                    continue
                if out.error is not None:
                    retry_or_fail(state, out.node, f"failed on node {out.node[:12]}: {out.error}")
                    continue
                t = out.timed
                ledger.add_rows(state.job, t.rows, state.attempts, out.node, t.start, t.end, t.plan, t.warnings,
                                t.choice)
                progress.move(state.job.profile, "running", "done")
                release(state)
            now = time.monotonic()
            for ref, (state, node, t0) in running.items():
                if ref not in timed_out and now - t0 > spec.timeout_s:
                    timed_out.add(ref)
                    ray.cancel(ref, force=True)
    finally:
        for ref in running:  # interrupted: free the devices
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001
                pass
