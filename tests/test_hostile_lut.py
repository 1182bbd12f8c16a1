"""LUT and timing-cache files against a hostile or careless hand: numbers at the edge of a
float, a plan naming a model that does not exist, keys written twice, a cache directory whose
name the kernel refuses, two plans saving into one cache file. A LUT is refused in one line; a
cache is a shortcut, so a bad one costs a warning and a re-measure, never the plan."""

from __future__ import annotations

import json

import pytest

from gsdeploy.cli import app
from gsdeploy.plan import cache
from gsdeploy.plan.cache import LutError, Timing, TimingTable, parse_table
from gsdeploy.plan.timing import fingerprint
from gsdeploy.target import make_target

pytest.importorskip("onnxruntime")
MODEL = "resnet20_pruned50"
FP = {"engine": "ort", "device": "CPU", "threads": 1}
RECORD = {"winner": "never", "model": "m", "choices": {}, "reasons": {}, "batch_winners": {"1": "never"}}


def lut_json(**parts) -> str:
    return json.dumps({"format": cache.FORMAT, "version": cache.VERSION, "fingerprint": FP, **parts})


def whole_models(ms: dict[str, float]) -> dict:
    return {"k": {v: {"1": [t, 0.01]} for v, t in ms.items()}}


# ---- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("ms", [5e-324, 1e-300, 1e-7])
def test_a_timing_under_a_nanosecond_is_refused(ms):
    """A hand-made LUT timing one model at 5e-324 ms and another at 1e7 made the geometric mean
    log(0): 'internal error (ValueError: math domain error)' from `inspect --lut`."""
    models = whole_models({v: 1e7 for v in cache.PLAN_VARIANTS} | {"latency": ms})
    with pytest.raises(LutError, match="out of range"):
        parse_table(lut_json(models=models), "x.json")
    # the smallest and largest timings allowed still give a finite, non-zero ratio either way
    assert 0 < cache.MIN_MS / cache.MAX_MS and cache.MAX_MS / cache.MIN_MS < float("inf")
    parse_table(lut_json(models=whole_models({"never": cache.MIN_MS, "flops": cache.MAX_MS})), "x.json")


# ---- what a plan record names ---------------------------------------------------------------


@pytest.mark.parametrize("winner", ["dense", "fastest", 7, None])
def test_a_plan_naming_a_model_that_does_not_exist_is_refused_when_read(winner):
    with pytest.raises(LutError, match="winner"):
        parse_table(lut_json(plans={"p": {**RECORD, "winner": winner}}), "x.json")


def test_a_cache_naming_an_unknown_winner_is_damaged_and_re_measured(tmp_path, monkeypatch):
    """It was an error ('cached plan names an unknown variant') on every plan of that model
    until the user found and removed the cache file by hand."""
    fp = fingerprint(make_target("ort", threads=1))
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path))
    text = TimingTable(fp, plans={"p": {**RECORD, "winner": "dense"}}).to_json()
    cache.cache_path(fp).write_text(text)
    assert cache.load_cached(fp).plans == {}
    assert "damaged timing cache file" in cache.cache_problem(fp)


# ---- the JSON itself ------------------------------------------------------------------------


HEAD = '"format": "gsdeploy-timing-lut", "version": 1, "fingerprint": {"engine": "ort"}'


@pytest.mark.parametrize("text, words", [
    ('{' + HEAD + ', "version": 99}', "'version' is written twice"),
    ('{' + HEAD + ', "sites": {"s": {"keep": {"1": [1.0, 0.1], "1": [9.0, 0.1]}}}}', "'1' is written twice"),
    ('{' + HEAD + ', "plans": {}, "plans": {}}', "'plans' is written twice"),
    ('{' + HEAD + ', "notes": "hand-edited"}', "unknown key 'notes'"),
])
def test_a_lut_saying_two_things_or_something_unknown_is_refused(text, words):
    """json keeps the last of two equal keys, so a LUT could say two timings for one batch and
    be read as one of them; an unknown key was dropped without a word."""
    with pytest.raises(LutError, match=words):
        parse_table(text, "x.json")


def test_a_fingerprint_naming_nothing_known_is_described():
    """'was measured on another target ()': the empty brackets named nothing."""
    table = parse_table(json.dumps({"format": cache.FORMAT, "version": 1, "fingerprint": {"x": 1}}), "x.json")
    with pytest.raises(LutError, match=r"another target \(a target it does not name\)"):
        cache.check_matches(table, FP, "x.json", ("engine",))


# ---- the cache directory --------------------------------------------------------------------


def test_a_cache_dir_the_kernel_refuses_is_a_warning_not_an_error(tmp_path, monkeypatch):
    """A directory name over 255 bytes: stat raises ENAMETOOLONG, which Path.is_file does not
    swallow, and every latency plan ended in 'error: cannot access ...'."""
    fp = fingerprint(make_target("ort", threads=1))
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / ("a" * 300)))
    assert cache.load_cached(fp).fingerprint == fp
    assert "cannot be written" in cache.cache_problem(fp)
    assert cache.save_cached(TimingTable(fp)) is None


@pytest.mark.parametrize("kind, words", [("directory", "it is a directory"), ("fifo", "it is a FIFO"),
                                         ("symlink", "symbolic link"), ("unopenable", "ermission denied")])
def test_a_lock_file_that_cannot_be_locked_is_a_warning_not_silence(tmp_path, monkeypatch, kind, words):
    """A lock file that is a directory (or a FIFO, a link, a file we may not open) made every
    save_cached give up without a word: the timings were silently never kept."""
    import os

    fp = fingerprint(make_target("ort", threads=1))
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path))
    lock = cache.lock_path(fp)
    if kind == "directory":
        lock.mkdir()
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "symlink":
        (tmp_path / "elsewhere").write_text("")
        lock.symlink_to(tmp_path / "elsewhere")
    else:
        if os.geteuid() == 0:
            pytest.skip("root opens any file")
        lock.write_text("")
        lock.chmod(0)
    note = cache.cache_problem(fp)
    assert note is not None and "lock file" in note and words in note and "not kept" in note, note
    table = TimingTable(dict(fp))
    table.put_site("s", "keep", 1, Timing(1.0, 0.1))
    assert cache.save_cached(table) is None and not cache.cache_path(fp).exists()


def test_two_plans_saving_into_one_cache_file_keep_both(tmp_path, monkeypatch):
    """Two plans on one target (two models, or two processes at once) each loaded the cache,
    added their model and wrote it whole: the second writer dropped the first one's timings."""
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path))
    first, second = TimingTable(dict(FP)), TimingTable(dict(FP))  # both loaded before either saved
    first.put_site("s", "keep", 1, Timing(1.0, 0.1))
    first.plans["a"] = dict(RECORD)
    second.put_site("s", "keep", 32, Timing(9.0, 0.1))
    second.put_site("s", "fuse", 1, Timing(0.5, 0.1))
    second.plans["b"] = dict(RECORD)
    cache.save_cached(first)
    cache.save_cached(second)
    kept = cache.load_cached(FP)
    assert set(kept.plans) == {"a", "b"}
    assert kept.site("s", "keep", 1) == Timing(1.0, 0.1) and kept.site("s", "keep", 32) == Timing(9.0, 0.1)
    assert kept.site("s", "fuse", 1) == Timing(0.5, 0.1)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp file left beside it


# ---- the command line: --batch, a LUT for other batches, a target that cannot be timed ------


def test_a_lut_made_at_other_batches_says_which(tmp_path, monkeypatch):
    """It said 'run `gsdeploy plan` with this model', which the user had just done: the LUT was
    made at batch 1 and the export asked for 1,2. `plan --batch` makes a LUT for other batches."""
    from tests.test_hostile_plan import fails, runner

    # a cache of its own: the session's shared one holds other tests' timings at other batches,
    # and a LUT carries the whole table of its target
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))

    lut = tmp_path / "b1.json"
    r = runner.invoke(app, ["plan", MODEL, "--batch", "1", "--save-lut", str(lut)])
    assert r.exit_code == 0, r.output
    assert {b for c in json.loads(lut.read_text())["sites"].values() for bs in c.values() for b in bs} == {"1"}
    fails("at batch 1, not at batch 2", "export", MODEL, "--lut", str(lut), "--batch", "1,2",
          "-o", str(tmp_path / "m.onnx"))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("args", [
    ["plan", MODEL, "--profile", "server-gpu-trt"],
    ["inspect", MODEL, "--profile", "server-gpu-trt", "--plan", "latency"],
])
def test_a_latency_plan_that_cannot_be_timed_here_fails_before_the_model_is_loaded(monkeypatch, args):
    """The model (and its dense baseline) were loaded, and the plan refused after."""
    from tests.test_hostile_plan import fails, never_loaded

    never_loaded(monkeypatch)
    fails("--plan latency: target trt needs", *args)  # a CUDA GPU (and TensorRT) here


@pytest.mark.parametrize("cmd", [["bench", "-o", "{tmp}"], ["export", "-o", "{tmp}/m.onnx"], ["plan"]])
@pytest.mark.parametrize("batch", ["", " , "])
def test_an_empty_batch_flag_is_an_error_not_the_default(tmp_path, monkeypatch, cmd, batch):
    """`--batch ''` (an unset shell variable) ran the profile's batches as if no flag was given."""
    from tests.test_hostile_plan import fails, never_loaded

    never_loaded(monkeypatch)
    fails("--batch must list integers", cmd[0], MODEL, *[a.format(tmp=tmp_path) for a in cmd[1:]], "--batch", batch)
    assert not list(tmp_path.iterdir())
