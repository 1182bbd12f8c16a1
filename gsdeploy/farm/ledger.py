"""DIR/<sweep>.csv: every job's rows, appended as each job finishes, and every failed job's reason.

The file holds bench rows (bench/rows.py COLUMNS) plus the sweep's own columns. A job's rows are
added in one atomic rewrite of the file, so after an interruption a job is either fully in the file or not
at all; `--resume` keeps the finished jobs and runs the rest (failed ones again). A job that failed
for good is one row with status "failed" and its reason, so nothing is lost silently;
`gsdeploy report` leaves such rows out of its tables.

A table may have been edited by hand before `--resume`: its finished rows are checked as bench
checks the rows it resumes (bench/results_file.py, per job), and anything it cannot trust (a row
cut off, a foreign column, a number that is not finite, a job without exactly one baseline and one
compressed row per engine, a status other than ok or failed, a row whose batch or profile is not
the one its sweep_job names, a file too big or not UTF-8, a directory or device in its place) is
one error naming the line, with nothing written. Rows of jobs
that are not in the sweep file (it was edited since) are kept as they are.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from gsdeploy.atomic import check_out_dir, check_targets, write_text_atomic
from gsdeploy.bench.results_file import check_resumed_rows, parse_resumed, read_resumed_text, resume_error
from gsdeploy.bench.rows import COLUMNS, to_csv_text, to_markdown
from gsdeploy.errors import GsdeployError
from gsdeploy.limits import short
from gsdeploy.farm.spec import Job, job_key_fields

# plan: the plan the job's compressed model was deployed with (latency | flops); warning: the plan
# stage's reason for not measuring on the target, kept beside the rows it explains; plan_variant:
# which of the latency plan's whole models ran at the job's batch (never | flops | always | latency:
# a batch may have a faster model of its own than the one `export` writes), empty for the FLOP plan
SWEEP_COLUMNS = ["sweep", "sweep_job", "status", "error", "attempts", "node", "job_start", "job_end", "plan",
                 "warning", "plan_variant"]
ALL_COLUMNS = COLUMNS + SWEEP_COLUMNS
OK, FAILED = "ok", "failed"


class Ledger:
    def __init__(self, out_dir: Path, sweep: str, resume: bool, inputs: Iterable[Path] = ()) -> None:
        """Fresh: an existing <sweep>.csv/.md is replaced. Resume: its finished jobs are kept (and
        listed in `done`), its failed ones dropped so they run again. Neither may be one of
        `inputs` (the sweep's own files: `sweep s.md -o .` replaced the sweep file s.md)."""
        out_dir = Path(out_dir)
        check_out_dir(out_dir)
        self.sweep = sweep
        self.csv_path = out_dir / f"{sweep}.csv"
        self.md_path = out_dir / f"{sweep}.md"
        self.done: set[str] = set()
        self.rows = pd.DataFrame(columns=ALL_COLUMNS)
        self.inputs = list(inputs)
        # a directory or device in their place, or an input of the sweep, fails before any job
        check_targets([self.csv_path, self.md_path], self.inputs)
        text = read_resumed_text(self.csv_path) if resume else ""
        if text.strip():
            self.rows = self._finished(parse_resumed(text, self.csv_path))
            self.done = set(self.rows["sweep_job"].astype(str))
            self._write()
        else:
            for p in (self.csv_path, self.md_path):
                p.unlink(missing_ok=True)

    def _finished(self, old: pd.DataFrame) -> pd.DataFrame:
        """The finished jobs' rows of an earlier run (its failed jobs run again), checked."""
        missing = [c for c in ("sweep_job", "status") if c not in old.columns]
        if missing:
            raise GsdeployError(f"--resume: {self.csv_path} is not a sweep table (no {', '.join(missing)} column)")
        status = old["status"]
        bad = ~status.isin([OK, FAILED])
        if bad.any():
            line = int(bad[bad].index[0]) + 2
            raise resume_error(self.csv_path, f"line {line} has no status (a row cut off, or not written by gsdeploy)"
                               if status.isna()[bad].iloc[0] else f"line {line}: status must be {OK} or {FAILED}")
        ok = check_resumed_rows(old[status == OK], self.csv_path, extra_columns=SWEEP_COLUMNS,
                                group_by=("sweep_job",))
        self._check_job_keys(ok)
        return ok.reindex(columns=ALL_COLUMNS).reset_index(drop=True)

    def _check_job_keys(self, ok: pd.DataFrame) -> None:
        """Every finished row is timed at the batch and on the profile its sweep_job names: a row
        moved to another job by hand would mark that job done with another job's timings."""
        for i, r in zip(ok.index, ok.to_dict("records")):
            fields = job_key_fields(str(r["sweep_job"]))
            if fields is None:
                raise resume_error(self.csv_path, f"line {int(i) + 2}: sweep_job {short(str(r['sweep_job']), 80)!r} "
                                                  "is not a job key gsdeploy writes")
            profile, batch = fields
            if batch != r["batch"]:
                raise resume_error(self.csv_path, f"line {int(i) + 2}: batch is {r['batch']}, but its sweep_job "
                                                  f"names batch {batch}")
            row_profile = r.get("profile")
            if isinstance(row_profile, str) and row_profile and row_profile != profile:
                raise resume_error(self.csv_path, f"line {int(i) + 2}: profile is {short(row_profile, 40)!r}, but "
                                                  f"its sweep_job names profile {short(profile, 40)!r}")

    def _append(self, rows: pd.DataFrame) -> None:
        """The whole table is rewritten through a temp file (atomic): a sweep killed mid-write
        leaves the rows finished so far (a sweep has hundreds of rows; the copy is cheap)."""
        rows = rows.reindex(columns=ALL_COLUMNS)
        self.rows = rows if self.rows.empty else pd.concat([self.rows, rows], ignore_index=True)
        self._write()

    def _write(self) -> None:
        write_text_atomic(self.csv_path, to_csv_text(self.rows), self.inputs)

    def add_rows(self, job: Job, rows: pd.DataFrame, attempts: int, node: str, start: str, end: str,
                 plan: str = "", warnings: tuple[str, ...] = (), variant: str = "") -> None:
        extra = {"sweep": self.sweep, "sweep_job": job.key, "status": OK, "error": "",
                 "attempts": attempts, "node": node, "job_start": start, "job_end": end, "plan": plan,
                 "warning": " ".join(" ".join(warnings).split())[:500]}
        rows = rows.reindex(columns=COLUMNS).assign(**extra)
        # the variant is the compressed model's; the baseline is dense whatever the plan chose
        rows["plan_variant"] = [variant if r == "compressed" else "" for r in rows["role"].astype(str)]
        self._append(rows)
        self.done.add(job.key)

    def add_failure(self, job: Job, reason: str, attempts: int, node: str = "") -> None:
        """One row: which model, where, at which batch, and why it has no timings."""
        prof = job.profile
        row = {c: math.nan for c in ALL_COLUMNS}
        row.update({"model": job.entry.model, "role": "compressed", "engine": "", "precision": job.precision or "",
                    "batch": job.batch, "device": "", "sweep": self.sweep, "sweep_job": job.key, "profile": prof,
                    "status": FAILED, "error": " ".join(reason.split())[:500], "attempts": attempts, "node": node,
                    "job_start": "", "job_end": "", "plan": "", "warning": "", "plan_variant": ""})
        self._append(pd.DataFrame([row]))

    def warnings(self) -> list[str]:
        """Each distinct warning of the finished jobs, with the jobs it applies to."""
        if "warning" not in self.rows:
            return []
        ok = self.rows[(self.rows["status"].astype(str) == OK) & self.rows["warning"].notna()
                       & (self.rows["warning"].astype(str) != "")]
        return [f"{w} ({', '.join(dict.fromkeys(g['sweep_job'].astype(str)))})"
                for w, g in ok.groupby(ok["warning"].astype(str), sort=False)]

    def write_markdown(self) -> Path | None:
        """The finished rows as bench's Markdown table (failed jobs listed below it)."""
        if self.rows.empty:
            return None
        df = self.rows
        ok = df[df["status"].astype(str) == OK]
        text = to_markdown(_named_by_variant(ok)) if not ok.empty else "# gsdeploy sweep\n\nno job finished\n"
        warnings = self.warnings()
        if warnings:
            text += "\n## warnings\n\n" + "".join(f"- {w.replace('|', '/')}\n" for w in warnings)
        failed = df[df["status"].astype(str) == FAILED]
        if not failed.empty:
            text += "\n## failed jobs\n\n| job | attempts | reason |\n|---|---:|---|\n"
            for r in failed.to_dict("records"):
                text += f"| {r['sweep_job']} | {r['attempts']} | {str(r['error']).replace('|', '/')} |\n"
        write_text_atomic(self.md_path, text, self.inputs)
        return self.md_path


def _named_by_variant(rows: pd.DataFrame) -> pd.DataFrame:
    """The table's model cell says which of the latency plan's models a row timed ("m (always)"),
    so two batches of one model timed with different deployments are told apart."""
    variant = rows["plan_variant"].fillna("").astype(str) if "plan_variant" in rows else None
    if variant is None or not (variant != "").any():
        return rows
    model = rows["model"].astype(str)
    return rows.assign(model=model.where(variant == "", model + " (" + variant + ")"))
