"""Hostile and careless use of what gsdeploy writes (issue 9): outputs that are not regular
files, outputs that are inputs, earlier results, --resume files, two runs at once, pairs that
must publish together, signals, leftovers of killed runs, file modes and --name."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from gsdeploy import atomic
from gsdeploy.atomic import Staged, check_target, sweep_beside, sweep_scratch, write_text_atomic
from gsdeploy.cli import app
from gsdeploy.errors import GsdeployError, OutputPathError

pytest.importorskip("onnxruntime")

runner = CliRunner()
SHAPE = (3, 16, 16)
FAST = ("--warmup-s", "0.01", "--min-iterations", "3", "--min-duration-s", "0.01", "--engine", "ort", "--batch", "1")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(*args: str):
    return runner.invoke(app, list(args))


def refused(r, pattern: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert "error:" in r.stderr and pattern.lower() in r.stderr.lower(), r.stderr


# -- things that are not regular files ------------------------------------------------------

def make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "directory":
        path.mkdir()
    elif kind in ("null", "full"):
        if not ROOT:
            pytest.skip("making a device node needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3 if kind == "null" else 7))
    elif kind == "link-to-fifo":
        os.mkfifo(path.with_name("real-fifo"))
        path.symlink_to("real-fifo")


def same_kind(path: Path, kind: str) -> bool:
    mode = os.stat(path).st_mode
    return {"fifo": stat.S_ISFIFO, "link-to-fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK, "directory": stat.S_ISDIR,
            "null": stat.S_ISCHR, "full": stat.S_ISCHR}[kind](mode)


KINDS = ["null", "full", "fifo", "socket", "directory", "link-to-fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_export_never_replaces_a_special_file(tmp_path, kind):
    target = tmp_path / "m.onnx"
    make_special(target, kind)
    r = run("export", "resnet20", "-o", str(target))
    refused(r, "directory" if kind == "directory" else "not a regular file")
    assert same_kind(target, kind)
    assert not (tmp_path / "m.manifest.json").exists()


@pytest.mark.parametrize("kind", ["fifo", "null"])
def test_export_never_replaces_a_special_manifest(tmp_path, kind):
    make_special(tmp_path / "m.manifest.json", kind)
    r = run("export", "resnet20", "-o", str(tmp_path / "m.onnx"))
    refused(r, "not a regular file")
    assert same_kind(tmp_path / "m.manifest.json", kind) and not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A results CSV written by a real bench run of two small ONNX files."""
    tmp = tmp_path_factory.mktemp("hostile")
    for name, width in (("dense", 32), ("thin", 8)):
        torch.manual_seed(width)
        m = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(width, 5)).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(m, (torch.randn(2, *SHAPE),), str(tmp / f"{name}.onnx"), dynamo=False,
                              input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    r = run("bench", str(tmp / "thin.onnx"), "--baseline", str(tmp / "dense.onnx"), "-o", str(tmp / "res"),
            "--name", "r", *FAST)
    assert r.exit_code == 0, r.output
    return tmp


def bench(results: Path, out: Path, *args: str):
    return run("bench", str(results / "thin.onnx"), "--baseline", str(results / "dense.onnx"), "-o", str(out),
               *FAST, *args)


@pytest.mark.parametrize("kind", ["fifo", "null", "directory"])
def test_report_and_plot_never_replace_a_special_file(tmp_path, results, kind):
    target = tmp_path / "t.md"
    make_special(target, kind)
    refused(run("report", str(results / "res"), "-o", str(target)), "directory" if kind == "directory" else "regular")
    refused(run("report", str(results / "res"), "--plot", str(target)), "directory" if kind == "directory" else "regular")
    assert same_kind(target, kind)


def test_bench_never_replaces_a_special_table(tmp_path, results):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "r.md")
    refused(bench(results, out, "--name", "r"), "not a regular file")
    assert stat.S_ISFIFO(os.stat(out / "r.md").st_mode) and not (out / "r.csv").exists()


def test_check_target_refuses_a_device_behind_a_symlink(tmp_path):
    if not ROOT:
        pytest.skip("making a device node needs root")
    make_special(tmp_path / "dev", "full")
    (tmp_path / "out.md").symlink_to(tmp_path / "dev")
    with pytest.raises(OutputPathError, match="character device"):
        write_text_atomic(tmp_path / "out.md", "x")
    assert stat.S_ISCHR(os.stat(tmp_path / "dev").st_mode)


# -- an output that is an input ----------------------------------------------------------------

def spellings(tmp_path: Path, src: Path) -> dict[str, Path]:
    (tmp_path / "sub").mkdir(exist_ok=True)
    (tmp_path / "link").symlink_to(src)
    os.link(src, tmp_path / "hard")
    return {"same": src, "dotdot": tmp_path / "sub" / ".." / src.name, "symlink": tmp_path / "link",
            "hardlink": tmp_path / "hard"}


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink", "hardlink"])
def test_export_refuses_to_overwrite_its_checkpoint(tmp_path, how):
    model = tmp_path / "model.pt"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3)}, model)
    before = model.read_bytes()
    out = spellings(tmp_path, model)[how]
    r = run("export", str(model), "--arch", "hinge_resnet20", "-o", str(out))
    refused(r, "same file as the input")
    assert model.read_bytes() == before


def test_export_refuses_a_manifest_that_is_the_checkpoint(tmp_path):
    model = tmp_path / "m.manifest.json"
    model.write_bytes(b"checkpoint bytes")
    r = run("export", str(model), "-o", str(tmp_path / "m.onnx"))
    refused(r, "same file as the input")
    assert model.read_bytes() == b"checkpoint bytes" and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink", "hardlink"])
def test_report_refuses_to_overwrite_its_results(tmp_path, results, how):
    src = tmp_path / "in.csv"
    src.write_bytes((results / "res" / "r.csv").read_bytes())
    before = src.read_bytes()
    out = spellings(tmp_path, src)[how]
    refused(run("report", str(src), "-o", str(out)), "same file as the input")
    refused(run("report", str(src), "--plot", str(out)), "same file as the input")
    refused(run("report", str(tmp_path / "sub" / ".."), "-o", str(out)), "same file as the input")  # found in a dir
    assert src.read_bytes() == before


def test_report_table_and_plot_must_differ(tmp_path, results):
    out = tmp_path / "x.out"
    refused(run("report", str(results / "res"), "-o", str(out), "--plot", str(out)), "same file")
    assert not out.exists()


# -- earlier results, --resume, two runs ------------------------------------------------------------

def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture
def earlier(tmp_path, results) -> Path:
    out = tmp_path / "res"
    out.mkdir()
    for f in ("r.csv", "r.md"):
        (out / f).write_bytes((results / "res" / f).read_bytes())
    return out


def test_bad_engine_keeps_earlier_results(earlier, results):
    before = snapshot(earlier)
    refused(run("bench", str(results / "thin.onnx"), "--baseline", str(results / "dense.onnx"), "-o", str(earlier),
                "--name", "r", "--engine", "bogus", "--batch", "1"), "bogus")
    assert snapshot(earlier) == before


@pytest.mark.parametrize("exc", [MemoryError, GsdeployError])
def test_run_that_measures_nothing_keeps_earlier_results(earlier, results, monkeypatch, exc):
    """An out-of-memory first batch (or any failure before the first group is done) leaves the
    old tables as they were."""
    from gsdeploy.bench import sweep

    def boom(*a, **k):
        raise exc("out of memory at batch 1")

    monkeypatch.setattr(sweep, "measure_interleaved", boom)
    before = snapshot(earlier)
    r = bench(results, earlier, "--name", "r")
    assert r.exit_code != 0 and "out of memory" in r.stderr
    assert snapshot(earlier) == before


def test_fresh_run_replaces_earlier_results_once_it_has_rows(earlier, results):
    old = pd.read_csv(earlier / "r.csv")
    assert bench(results, earlier, "--name", "r").exit_code == 0
    new = pd.read_csv(earlier / "r.csv")
    assert len(new) == 2
    assert (new["timestamp"] != old["timestamp"]).any() or (new["latency_ms_median"] != old["latency_ms_median"]).any()
    assert sorted(p.name for p in earlier.iterdir()) == ["r.csv", "r.md"]  # no lock or temp file left


def cut_variants(text: str) -> dict[str, str]:
    header, *rows = text.splitlines(keepends=True)
    last = rows[-1]
    mid = last.index(",", len(last) // 3) + 3  # inside a number somewhere in the row
    return {
        "cut mid-number": header + "".join(rows[:-1]) + last[:mid],
        "cut at a line end": header + "".join(rows[:-1]),
        "duplicated group": header + "".join(rows) + "".join(rows),
        "foreign csv": "name,score\nalice,1\n",
        "inf latency": header + "".join(rows[:-1]) + last.replace(last.split(",")[10], "inf", 1),
        "nan batch": header + "".join(rows[:-1]) + ",".join(
            v if i != 5 else "nan" for i, v in enumerate(last.split(","))),
        "unknown column": header.rstrip("\n") + ",extra\n" + "".join(r.rstrip("\n") + ",1\n" for r in rows),
        "other models": text.replace("thin", "other"),
        "binary junk": "\x00\xff" * 40 + "\n",
    }


@pytest.mark.parametrize("case", list(cut_variants("h\na,b,c,d,e,f,g,h,i,j,k,l\n")))
def test_resume_refuses_a_damaged_or_foreign_file(earlier, results, case):
    text = (earlier / "r.csv").read_text()
    bad = cut_variants(text)[case]
    (earlier / "r.csv").write_text(bad, errors="surrogateescape")
    before = snapshot(earlier)
    r = bench(results, earlier, "--name", "r", "--resume")
    refused(r, "--resume")
    assert snapshot(earlier) == before


def test_resume_of_a_valid_file_keeps_its_rows(earlier, results):
    old = pd.read_csv(earlier / "r.csv")
    r = run("bench", str(results / "thin.onnx"), "--baseline", str(results / "dense.onnx"), "-o", str(earlier),
            "--name", "r", *FAST[:6], "--engine", "ort", "--batch", "1,2", "--resume")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(earlier / "r.csv")
    assert sorted(df["batch"]) == [1, 1, 2, 2]
    assert df[df["batch"] == 1]["timestamp"].tolist() == old["timestamp"].tolist()


def test_second_run_on_the_same_stem_is_refused(earlier, results):
    before = snapshot(earlier)
    fd = os.open(earlier / "r.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running bench holds
        os.write(fd, b"4242\n")
        r = bench(results, earlier, "--name", "r")
        refused(r, "another gsdeploy bench (pid 4242)")
        assert {k: v for k, v in snapshot(earlier).items() if k != "r.lock"} == before
        assert bench(results, earlier, "--name", "other").exit_code == 0  # another stem is fine
    finally:
        os.close(fd)


def test_lock_of_a_killed_run_does_not_block(earlier, results):
    (earlier / "r.lock").write_text("999999\n")  # left by a SIGKILLed run: the file, but no flock
    r = bench(results, earlier, "--name", "r")
    assert r.exit_code == 0, r.output
    assert not (earlier / "r.lock").exists()


def test_lock_file_that_is_a_symlink_is_refused(earlier, results, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (earlier / "r.lock").symlink_to(victim)
    refused(bench(results, earlier, "--name", "r"), "lock")
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x\ny", "..", "/abs"])
def test_name_stays_inside_the_output_directory(tmp_path, results, name):
    out = tmp_path / "deep" / "er"
    r = bench(results, out, "--name", name)
    refused(r, "--name must be a plain file name")
    assert not any(p.suffix in (".csv", ".md") for p in tmp_path.rglob("*"))


# -- pairs publish together ---------------------------------------------------------------------

def test_pair_rolls_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    a, b = tmp_path / "m.onnx", tmp_path / "m.manifest.json"
    a.write_text("old artifact")
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    with Staged([a, b]) as st:
        st.write_text(a, "new artifact")
        st.write_text(b, "{}")
        monkeypatch.setattr(os, "replace", flaky)
        with pytest.raises(OutputPathError, match="nothing was published"):
            st.commit()
        monkeypatch.setattr(os, "replace", real)
    assert a.read_text() == "old artifact" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp or backup left


def test_pair_rechecks_targets_before_the_first_rename(tmp_path):
    a, b = tmp_path / "m.onnx", tmp_path / "m.manifest.json"
    a.write_text("old artifact")
    with Staged([a, b]) as st:
        st.write_text(a, "new")
        st.write_text(b, "{}")
        b.mkdir()  # appears while the export runs
        with pytest.raises(OutputPathError, match="directory"):
            st.commit()
    assert a.read_text() == "old artifact" and b.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.manifest.json", "m.onnx"]


def test_export_with_a_directory_as_manifest_writes_nothing(tmp_path):
    (tmp_path / "m.onnx").write_text("older export")
    (tmp_path / "m.manifest.json").mkdir()
    refused(run("export", "resnet20", "-o", str(tmp_path / "m.onnx")), "directory")
    assert (tmp_path / "m.onnx").read_text() == "older export"


# -- modes ----------------------------------------------------------------------------------------

@pytest.fixture
def set_umask():
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_new_files_follow_the_umask(tmp_path, set_umask):
    set_umask(0o027)
    p = write_text_atomic(tmp_path / "a.md", "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    set_umask(0o002)
    p = write_text_atomic(tmp_path / "b.md", "x")
    assert stat.S_IMODE(p.stat().st_mode) == 0o664


def test_replaced_files_keep_their_mode(tmp_path, set_umask):
    p = tmp_path / "a.md"
    p.write_text("old")
    p.chmod(0o644)
    set_umask(0o077)
    write_text_atomic(p, "new")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644 and p.read_text() == "new"
    p.chmod(0o600)
    set_umask(0o022)
    write_text_atomic(p, "newer")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_bench_tables_and_report_get_the_umask(tmp_path, results, set_umask):
    set_umask(0o022)
    assert bench(results, tmp_path / "out", "--name", "r").exit_code == 0
    for f in ("r.csv", "r.md"):
        assert stat.S_IMODE((tmp_path / "out" / f).stat().st_mode) == 0o644
    assert run("report", str(tmp_path / "out"), "-o", str(tmp_path / "t.md")).exit_code == 0
    assert stat.S_IMODE((tmp_path / "t.md").stat().st_mode) == 0o644


# -- leftovers of killed runs ---------------------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t), follow_symlinks=False)


def test_stale_temp_files_beside_an_output_are_swept(tmp_path):
    target = tmp_path / "m.onnx"
    dead, live = dead_pid(), os.getpid()
    stale = tmp_path / f".m.onnx.tmp-{dead}"
    stale_new = tmp_path / f".m.onnx.tmp-{dead}-abc123"
    young = tmp_path / f".m.onnx.tmp-{dead}-young"
    mine = tmp_path / f".m.onnx.tmp-{live}-xyz"
    other = tmp_path / f".other.onnx.tmp-{dead}"
    for p in (stale, stale_new, young, mine, other):
        p.write_text("x")
    for p in (stale, stale_new, mine, other):
        age(p, atomic.STALE_AFTER_S + 60)
    assert sorted(sweep_beside(target)) == sorted([stale, stale_new])
    assert young.exists() and mine.exists() and other.exists()


def test_stale_scratch_dirs_are_swept(tmp_path):
    dead = dead_pid()
    old = tmp_path / f"gsdeploy-bench-{dead}-abcd"
    live = tmp_path / f"gsdeploy-bench-{os.getpid()}-efgh"
    foreign = tmp_path / f"someone-else-{dead}-x"
    for d in (old, live, foreign):
        d.mkdir()
        (d / "big.onnx").write_bytes(b"0" * 1000)
        age(d, atomic.STALE_AFTER_S + 60)
    assert sweep_scratch(tmp_path) == [old]
    assert live.exists() and foreign.exists()


def test_check_target_accepts_a_new_file_in_an_existing_directory(tmp_path):
    assert check_target(tmp_path / "new.md") == tmp_path / "new.md"
    with pytest.raises(OutputPathError, match="does not exist"):
        check_target(tmp_path / "no" / "new.md")


def test_threshold_manifest_reports_its_own_error(tmp_path):
    """--prune-threshold that removes non-zero groups: the ONNX is checked against the
    thresholded model (and passes), the threshold's own error is reported beside it."""
    r = run("export", "resnet20_hinge50", "--prune-threshold", "0.5", "-o", str(tmp_path / "t.onnx"),
            "--plan", "flops")  # MACs by FLOPs (a latency plan may pad widths)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "t.manifest.json").read_text())
    assert m["threshold_error"]["max_rel_err"] > 1e-2  # the threshold really changed the model
    assert m["onnx_vs_original"]["max_rel_err"] < 1e-4 and m["onnx_vs_original"]["passed"]
    assert "thresholded" in m["onnx_vs_original"]["reference"]
    assert m["macs"]["after"] < 0.6 * m["macs"]["before"]
    for f in ("t.onnx", "t.manifest.json"):  # published from temp files, with the umask's mode
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o666 & ~atomic.umask()


# -- signals and the console script's error contract --------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def start(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO), "GSDEPLOY_DEBUG": ""}
    return subprocess.Popen([sys.executable, "-m", "gsdeploy", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(pred, p: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if p.poll() is not None:
            pytest.fail(f"process ended before the test could signal it: {p.communicate()}")
        if time.monotonic() > end:
            p.kill()
            pytest.fail("timed out waiting for the process")
        time.sleep(0.005)


def test_sigterm_cleans_up_bench_like_sigint(tmp_path, results):
    scratch, out = tmp_path / "tmp", tmp_path / "out"
    scratch.mkdir()
    p = start(["bench", str(results / "thin.onnx"), "--baseline", str(results / "dense.onnx"), "-o", str(out),
               "--name", "r", "--engine", "ort", "--batch", "1", "--warmup-s", "120", "--min-iterations", "3",
               "--min-duration-s", "1"], scratch)
    wait_for(lambda: (out / "r.lock").exists() and any(scratch.glob(f"gsdeploy-bench-{p.pid}-*")), p)
    time.sleep(0.3)  # into the warm-up
    p.send_signal(15)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "error: terminated" in err and "Traceback" not in err, err
    assert list(scratch.glob("gsdeploy-*")) == [] and list(out.iterdir()) == []  # no scratch dir, lock or tables


def test_sigterm_during_export_leaves_no_temp_file(tmp_path):
    out = tmp_path / "m.onnx"
    p = start(["export", "resnet20", "-o", str(out)], tmp_path)
    wait_for(lambda: any(tmp_path.glob(f".m.onnx.tmp-{p.pid}-*")), p)
    p.send_signal(15)
    _, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.skip("the export finished before SIGTERM arrived")
    assert p.returncode == 143 and "error: terminated" in err, err
    assert list(tmp_path.glob("*m.*")) == [] and list(tmp_path.glob("gsdeploy-*")) == []


@pytest.mark.parametrize("args,pattern", [
    (["report"], "missing argument"),
    (["bench", "--prune-threshold", "abc"], "--prune-threshold"),
    (["export", "resnet20", "--bogus"], "no such option: --bogus"),
    (["bench", "--batch"], "--batch"),
    (["nosuch"], "no such command"),
])
def test_argument_errors_are_one_error_line(capsys, args, pattern):
    from gsdeploy.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and pattern.lower() in lines[0].lower(), captured.err
    assert not any(c in captured.err for c in "╭│╰") and captured.out == ""


def test_validate_a_folder_without_claims_fails(tmp_path):
    (tmp_path / "notes.txt").write_text("claims live elsewhere")
    r = run("validate", str(tmp_path))
    refused(r, "holds no claim files")


def test_validate_output_never_replaces_its_claims(tmp_path):
    claims = tmp_path / "c.yaml"
    claims.write_text("paper: P\nclaims:\n  - {id: a, model: resnet20_hinge50, baseline: resnet20, metric: flop_ratio,"
                      " claimed: 2.0, tolerance: {rel: 0.1}, source: Table 1}\n")
    before = claims.read_bytes()
    refused(run("validate", str(claims), "-o", str(claims)), "same file as the input")
    refused(run("validate", str(tmp_path), "-o", str(tmp_path / "c.yaml")), "same file as the input")
    assert claims.read_bytes() == before
    r = run("validate", str(claims), "-o", str(tmp_path / "v.md"))  # a new file is fine, no manifest asked for
    assert r.exit_code in (0, 1) and "error:" not in r.stderr, r.output  # PASS or FAIL, both written
    assert (tmp_path / "v.md").exists() and not list(tmp_path.glob("*manifest*"))


def test_bench_with_a_threshold_times_the_thresholded_model_against_the_plain_baseline(tmp_path):
    r = run("bench", "resnet20_hinge50", "--prune-threshold", "0.5", "-o", str(tmp_path), "--name", "t", *FAST)
    assert r.exit_code == 0, r.output
    assert "--prune-threshold 0.5 changed resnet20_hinge50[threshold=0.5]'s outputs by max rel" in r.stderr
    df = pd.read_csv(tmp_path / "t.csv").set_index("role")
    assert df.loc["baseline", "model"] == "resnet20" and df.loc["compressed", "model"] == "resnet20_hinge50[threshold=0.5]"
    from gsdeploy.metrics import count_macs
    from gsdeploy.zoo import create_model

    dense = create_model("resnet20")
    assert df.loc["baseline", "macs"] == pytest.approx(count_macs(dense.module, dense.input_shape), rel=0.01)  # not cut
    assert df.loc["compressed", "max_rel_err"] < 1e-4  # against the thresholded reference
    plan = json.loads((tmp_path / "t.plan.json").read_text())
    assert plan["threshold_error"]["max_rel_err"] > 1e-2
