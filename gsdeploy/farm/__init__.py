"""Benchmark sweeps: a sweep file's jobs run here one after another, or across a Ray cluster of
devices (`--cluster`), with rows appended to DIR/<sweep>.csv as each job finishes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gsdeploy.errors import MissingDependencyError
from gsdeploy.farm.cluster import connect, run_cluster
from gsdeploy.farm.ledger import FAILED, OK, Ledger
from gsdeploy.farm.local import run_local
from gsdeploy.farm.progress import SweepProgress
from gsdeploy.farm.spec import SweepSpec, Timing, load_sweep
from gsdeploy.target import unavailable_reason

__all__ = ["SweepSummary", "Timing", "load_sweep", "run_sweep_spec"]


@dataclass
class SweepSummary:
    csv_path: Path
    md_path: Path | None
    jobs: int
    skipped: int  # finished in an earlier run (--resume)
    done: int
    failed: list[str]  # "job: reason"
    warnings: list[str]  # e.g. the FLOP plan used where the target could not be timed, with its jobs


def run_sweep_spec(spec: SweepSpec, out_dir: Path, cluster: str | None = None, resume: bool = False,
                   command: str = "", progress: bool = True) -> SweepSummary:
    """Run every job of `spec` not already in DIR/<name>.csv (with `resume`) and return what happened.
    Without `cluster` the jobs run here and every profile must be able to run here (checked before
    any job starts); with it, each job runs on a node of the cluster offering its device kind."""
    if cluster is None:
        for prof in spec.profiles.values():
            for t in prof.targets:
                reason = unavailable_reason(t)
                if reason:
                    raise MissingDependencyError(f"profile {prof.name} cannot run here: {reason} "
                                                 "(run the sweep with --cluster on a cluster that has such a device)")
    ray = None
    if cluster is not None:
        ray = connect(cluster)  # before the ledger touches DIR: a wrong address changes nothing
    try:
        ledger = Ledger(out_dir, spec.name, resume, spec.input_files())
        all_jobs = spec.jobs()
        jobs = [j for j in all_jobs if j.key not in ledger.done]
        counts = {p: sum(1 for j in jobs if j.profile == p) for p in spec.profiles}
        with SweepProgress(counts, enabled=progress) as bar:
            if ray is None:
                run_local(spec, jobs, ledger, bar, command)
            else:
                run_cluster(ray, spec, jobs, ledger, bar, command)
    finally:
        if ray is not None:
            ray.shutdown()
    md = ledger.write_markdown()
    df = ledger.rows
    failed = df[df["status"].astype(str) == FAILED]
    # rows of jobs the sweep file no longer names are kept in the table, not counted here
    done = {str(k) for k in df.loc[df["status"].astype(str) == OK, "sweep_job"]} & {j.key for j in all_jobs}
    return SweepSummary(ledger.csv_path, md, len(all_jobs), len(all_jobs) - len(jobs), len(done),
                        [f"{r['sweep_job']}: {r['error']}" for r in failed.to_dict("records")], ledger.warnings())
