"""`gsdeploy sweep --resume` on a ledger (DIR/<sweep>.csv) edited by hand or by someone hostile:
each damage is one `error:` line and exit 2 before any job runs, the file left byte for byte as it
was (the earlier good rows are never lost), never a traceback. Rows of jobs the sweep file no
longer names are kept as they are, and a ledger written before the plan_variant column resumes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.limits import MAX_CSV_BYTES
from tests.test_input_limits import one_error_line

pytest.importorskip("onnxruntime")

runner = CliRunner()
FAST = ["--warmup-s", "0.01", "--min-iterations", "3", "--min-duration-s", "0.01"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real sweep, finished: two jobs (batch 1 and 2), four rows. The FLOP plan: what is under
    test is the ledger, not the plan."""
    d = tmp_path_factory.mktemp("ledger")
    (d / "cpu-a.yaml").write_text("name: cpu-a\ndescription: test device\ndevice: cpu\n"
                                  "engines: [{name: ort, precisions: [fp32]}]\nbatches: [1]\nthreads: 1\n")
    (d / "tiny.yaml").write_text("models: [{model: resnet20_pruned50, plan: flops}]\nprofiles: [cpu-a.yaml]\n"
                                 "batches: [1, 2]\n")
    r = runner.invoke(app, ["sweep", str(d / "tiny.yaml"), "--output", str(d / "out"), *FAST])
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(d / "out" / "tiny.csv")) == 4
    return d


@pytest.fixture
def sweep(finished, tmp_path) -> Path:
    """A copy of the finished sweep to damage."""
    shutil.copytree(finished, tmp_path / "s")
    return tmp_path / "s"


def resume(d: Path):
    return runner.invoke(app, ["sweep", str(d / "tiny.yaml"), "--output", str(d / "out"), "--resume",
                               *FAST])


def edit_rows(fn: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[str], str]:
    def edit(text: str) -> str:
        import io

        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        return fn(df).to_csv(index=False, lineterminator="\n")
    return edit


def set_cell(col: str, value: str, row: int = 1) -> Callable[[str], str]:
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row, col] = value
        return df
    return edit_rows(fn)


TEXT_DAMAGE = {
    "cut mid-row": (lambda t: t[:-25], "ends in the middle of a row"),
    "last row lost": (lambda t: "".join(t.splitlines(keepends=True)[:-1]), "every group has one baseline and one"),
    "a row cut short": (lambda t: t.replace(t.splitlines()[2], ",".join(t.splitlines()[2].split(",")[:10]), 1),
                        "line 3 has no status"),
    "extra column": (edit_rows(lambda df: df.assign(note="mine")), "columns gsdeploy does not write: note"),
    "missing column": (edit_rows(lambda df: df.drop(columns=["latency_ms_p90"])), "missing columns: latency_ms_p90"),
    "no status column": (edit_rows(lambda df: df.drop(columns=["status"])), "not a sweep table"),
    "inf latency": (set_cell("latency_ms_median", "inf"), "latency_ms_median must be a finite number"),
    "nan latency": (set_cell("latency_ms_median", "nan"), "latency_ms_median must be a finite number"),
    "1e999 speedup": (set_cell("speedup_vs_baseline", "1e999"), "speedup_vs_baseline must be a finite number"),
    "an empty timing": (set_cell("latency_ms_mean", ""), "line 3 has no latency_ms_mean"),
    "negative latency": (set_cell("latency_ms_p99", "-3"), "latency_ms_p99 must be a finite number"),
    "1e300 MACs": (set_cell("macs", "1e300"), "macs must be a finite number >= 0 and <= 1e+16"),
    "latency under a nanosecond": (set_cell("latency_ms_min", "1e-320"), "latency_ms_min must be a finite number"),
    "top-1 over 100": (set_cell("top1", "250"), "top1 must be a finite number >= 0 and <= 100"),
    "batch 1.5": (set_cell("batch", "1.5"), "batch must be an integer"),
    "empty role": (set_cell("role", ""), "has no role"),
    "role junk": (set_cell("role", "\x1b[31mred"), "has role"),
    "status junk": (set_cell("status", "done"), "status must be ok or failed"),
    "empty sweep_job": (set_cell("sweep_job", ""), "has no sweep_job"),
    "duplicate rows": (lambda t: t + "".join(t.splitlines(keepends=True)[1:3]), "every group has one baseline"),
    # a whole job's rows moved to another job by hand: each group still has its two rows, and the
    # job they claim would be skipped with another batch's timings
    "sweep_job of another batch": (edit_rows(lambda df: df.assign(sweep_job=df["sweep_job"].str.replace(
        "batch=2", "batch=1"))), "batch is 2, but its sweep_job names batch 1"),
    "batch of another job": (edit_rows(lambda df: df.assign(batch=df["batch"].replace("2", "3"))),
                             "batch is 3, but its sweep_job names batch 2"),
    "profile of another job": (edit_rows(lambda df: df.assign(profile="cpu-b")),
                               "profile is 'cpu-b', but its sweep_job names profile 'cpu-a'"),
    "sweep_job not a key": (edit_rows(lambda df: df.assign(sweep_job=df["batch"].map(lambda b: f"job {b}"))),
                            "sweep_job 'job 1' is not a job key gsdeploy writes"),
    "header only garbage": (lambda t: "a,b\n1,2\n", "not a sweep table"),
    "not CSV": (lambda t: '"unclosed\n' + t, "is not a readable CSV"),
}


@pytest.mark.parametrize("case", sorted(TEXT_DAMAGE))
def test_a_damaged_ledger_is_refused_and_left_as_it_was(sweep, case):
    damage, phrase = TEXT_DAMAGE[case]
    csv = sweep / "out" / "tiny.csv"
    csv.write_text(damage(csv.read_text()))
    before = csv.read_bytes()
    r = resume(sweep)
    one_error_line(r, phrase)
    assert "--resume" in r.stderr and str(csv) in r.stderr
    assert csv.read_bytes() == before


@pytest.mark.parametrize("case", ["utf-16", "latin-1", "nul bytes"])
def test_a_ledger_in_another_encoding_is_refused(sweep, case):
    csv = sweep / "out" / "tiny.csv"
    text = csv.read_text()
    data = {"utf-16": text.encode("utf-16"), "latin-1": text.replace("resnet20", "résnet20").encode("latin-1"),
            "nul bytes": text.encode() + b"\x00\x00\n"}[case]
    csv.write_bytes(data)
    r = resume(sweep)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: --resume"), r.stderr
    assert csv.read_bytes() == data


def test_a_huge_ledger_is_refused_before_it_is_read(sweep):
    csv = sweep / "out" / "tiny.csv"
    with open(csv, "r+b") as f:  # sparse: costs no disk
        f.truncate(MAX_CSV_BYTES + 1)
    one_error_line(resume(sweep), "a results table is at most")
    assert csv.stat().st_size == MAX_CSV_BYTES + 1


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink to a directory", "symlink to /dev/zero",
                                  "symlink loop"])
@pytest.mark.parametrize("flag", ["--resume", None])
def test_a_ledger_that_is_not_a_regular_file_is_refused(sweep, kind, flag):
    csv = sweep / "out" / "tiny.csv"
    csv.unlink()
    if kind == "directory":
        csv.mkdir()
        (csv / "keep.txt").write_text("mine")
    elif kind == "fifo":
        os.mkfifo(csv)
    elif kind == "symlink to a directory":
        csv.symlink_to(sweep)
    elif kind == "symlink to /dev/zero":
        csv.symlink_to("/dev/zero")
    else:
        csv.symlink_to(csv)
    args = ["sweep", str(sweep / "tiny.yaml"), "--output", str(sweep / "out"), *FAST]
    r = runner.invoke(app, args + ([flag] if flag else []))
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:"), r.stderr
    assert os.path.lexists(csv) and (kind != "directory" or (csv / "keep.txt").read_text() == "mine")


def test_a_ledger_behind_a_symlink_is_read_and_the_link_replaced_not_followed(sweep):
    """A symlink to a real ledger elsewhere: its rows are resumed; the new table replaces the
    link (gsdeploy writes through a temp file), and the file it pointed to stays as it was."""
    csv = sweep / "out" / "tiny.csv"
    elsewhere = sweep / "elsewhere.csv"
    csv.rename(elsewhere)
    csv.symlink_to(elsewhere)
    before = elsewhere.read_bytes()
    r = resume(sweep)
    assert r.exit_code == 0 and "2 of 2 jobs done (2 from an earlier run)" in r.output, r.output
    assert elsewhere.read_bytes() == before and len(pd.read_csv(csv)) == 4


def test_rows_of_jobs_not_in_the_sweep_file_are_kept(sweep):
    """The sweep file was edited since: the rows of a job it no longer names stay (results are
    never dropped by a resume), and the jobs it names are not run again."""
    csv = sweep / "out" / "tiny.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    foreign = df.iloc[:2].assign(sweep_job="model=gone;profile=cpu-a;batch=1", model="gone")
    pd.concat([df, foreign]).to_csv(csv, index=False, lineterminator="\n")
    r = resume(sweep)
    assert r.exit_code == 0 and "2 of 2 jobs done (2 from an earlier run)" in r.output, r.output
    after = pd.read_csv(csv)
    assert len(after) == 6 and (after["sweep_job"] == "model=gone;profile=cpu-a;batch=1").sum() == 2


def test_a_ledger_written_before_the_plan_variant_column_resumes(sweep):
    csv = sweep / "out" / "tiny.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False).drop(columns=["plan_variant"])
    df[df["batch"] == "1"].to_csv(csv, index=False, lineterminator="\n")  # the batch-2 job is missing
    r = resume(sweep)
    assert r.exit_code == 0 and "2 of 2 jobs done (1 from an earlier run)" in r.output, r.output
    after = pd.read_csv(csv)
    assert len(after) == 4 and set(after["status"]) == {"ok"}


@pytest.mark.parametrize("case", ["sweep file", "checkpoint"])
def test_a_sweep_never_writes_over_its_own_files(tmp_path, hinge_fixtures, case):
    """`gsdeploy sweep s.md -o .` ran every job and then wrote its Markdown table over the sweep
    file s.md; a checkpoint that happens to be named <sweep>.csv was deleted before the first job."""
    (tmp_path / "cpu-a.yaml").write_text("name: cpu-a\ndescription: test device\ndevice: cpu\n"
                                         "engines: [{name: ort, precisions: [fp32]}]\nbatches: [1]\nthreads: 1\n")
    if case == "sweep file":
        sweep, model = tmp_path / "s.md", "{model: resnet20_pruned50, plan: flops}"
    else:
        sweep, model = tmp_path / "s.yaml", "{model: s.csv, arch: hinge_resnet20, plan: flops}"
        shutil.copy(hinge_fixtures / "hinge_resnet20_cifar10.pt", tmp_path / "s.csv")
    sweep.write_text(f"name: s\nmodels: [{model}]\nprofiles: [{tmp_path / 'cpu-a.yaml'}]\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    r = runner.invoke(app, ["sweep", str(sweep), "--output", str(tmp_path), *FAST])
    one_error_line(r, "it is the same file as the input")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
