"""Run a sweep's jobs on this machine, one after another, as `gsdeploy bench` would."""

from __future__ import annotations

from typing import Callable

from gsdeploy.errors import GsdeployError
from gsdeploy.farm.ledger import Ledger
from gsdeploy.farm.progress import SweepProgress
from gsdeploy.farm.spec import Job, SweepSpec
from gsdeploy.farm.stages import model_files, prepare, prepare_keys, prepare_targets, time_job, timing_task


def describe_failure(e: BaseException) -> str:
    """One line for the failed-job record: our own errors as they are, anything else with its type."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, GsdeployError) else f"{type(e).__name__}: {text}".rstrip(": ")


def run_local(spec: SweepSpec, jobs: list[Job], ledger: Ledger, progress: SweepProgress, command: str,
              prepare_fn: Callable = prepare, time_fn: Callable = time_job) -> None:
    """Each model is deployed once per input shape and kept while its jobs run (jobs come model by
    model). A failed timing is tried again up to spec.retries times; then it is recorded as failed
    and the sweep goes on. `prepare_fn`/`time_fn` are the stages (replaceable in tests)."""
    cache: dict[tuple, object] = {}
    keys = prepare_keys(spec, jobs)
    targets = prepare_targets(spec, jobs, keys)
    for job in jobs:
        progress.move(job.profile, "queued", "running")
        entry = job.entry
        key = keys[job]
        if key not in cache:
            cache.clear()  # one model's artifacts in memory at a time
            try:
                cache[key] = prepare_fn(entry, key[1], targets[key], model_files(entry))
            except Exception as e:  # noqa: BLE001 - recorded, and the sweep goes on
                cache[key] = e
        prepared = cache[key]
        if isinstance(prepared, BaseException):
            ledger.add_failure(job, f"deploy/export failed: {describe_failure(prepared)}", attempts=0, node="local")
            progress.move(job.profile, "running", "failed")
            continue
        task = timing_task(spec, job, command)
        reason = ""
        for attempt in range(1, spec.retries + 2):
            try:
                timed = time_fn(task, prepared)
            except Exception as e:  # noqa: BLE001
                reason = describe_failure(e)
                continue
            ledger.add_rows(job, timed.rows, attempt, "local", timed.start, timed.end, timed.plan, timed.warnings,
                            timed.choice)
            progress.move(job.profile, "running", "done")
            break
        else:
            ledger.add_failure(job, reason, attempts=spec.retries + 1, node="local")
            progress.move(job.profile, "running", "failed")
