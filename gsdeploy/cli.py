"""The gsdeploy command line: parses, calls a stage, prints. No logic of its own."""

from __future__ import annotations

import functools
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.exceptions import TyperException

from gsdeploy.atomic import check_target, check_targets, files_in, write_text_atomic
from gsdeploy.errors import GsdeployError
from gsdeploy.export.artifact import check_output_path, manifest_path
from gsdeploy.limits import (MAX_BATCH, MAX_PRUNE_THRESHOLD, check_number, comma_list, is_out_of_memory, parse_batches,
                             short)
from gsdeploy.plan.site_rows import one_per_site
from gsdeploy.target import TargetFlags, require_available, resolve_targets

# The commands import torch- or pandas-heavy modules where they run (each such line says which),
# so `gsdeploy --help`, a typo or a bad flag answer at once.

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn group-sparsity compression of CNNs into real speed on the target, and prove it.")
# Pipes and test runners get wide tables instead of rich's 80-column default, so names never truncate.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="architecture of a state_dict checkpoint (see `gsdeploy zoo --archs`)")]
ShapeOpt = Annotated[Optional[str], typer.Option("--input-shape", help="per-sample input shape CxHxW, e.g. 3x32x32")]
FuseOpt = Annotated[Optional[str], typer.Option("--fuse", help="override: every factorized pair flops (fused when MACs drop) | always | never, no measuring (implies --plan flops); latency = --plan latency")]
PlanOpt = Annotated[str, typer.Option("--plan", help="latency: measure keep/fuse/pad candidates on the target (cached) and keep the fastest whole model; flops: decide by MACs; auto (default): latency where the target's engine runs here or --lut is given, else flops with a warning")]
LutOpt = Annotated[Optional[Path], typer.Option("--lut", help="timings measured on the target (`gsdeploy plan --save-lut`): plan from them without measuring here")]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="re-measure the latency plan instead of using the timing cache")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--prune-threshold", help="also remove groups whose L2 norm is at most this")]
TrustOpt = Annotated[bool, typer.Option("--trust", help="allow unpickling a whole nn.Module (runs code from the file)")]
ProfileOpt = Annotated[Optional[str], typer.Option("--profile", help="target profile: a name in profiles/ or a YAML path (default cpu-ort)")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="fail when zero channels remain that the passes could not remove")]


def _fail(code: int, message: str) -> None:
    # one line, no control characters (ANSI colours from torch messages), bounded in length
    err.print(f"[bold red]error:[/] {escape(short(message, 2000))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def guarded(fn):
    """Bad input ends in one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GsdeployError as e:
            _fail(e.exit_code, str(e))
        except KeyboardInterrupt:
            _fail(130, "interrupted")
        except Terminated:
            _fail(143, "terminated (SIGTERM)")
        except typer.Exit:
            raise
        except MemoryError:
            _fail(2, "out of memory: the input (a declared tensor, batch or input shape) is larger than this "
                     "machine can hold")
        except OSError as e:  # an unreadable or vanished file, a full disk: the environment, not a bug
            if os.environ.get("GSDEPLOY_DEBUG"):
                raise
            where = f" {e.filename}" if e.filename else ""
            _fail(2, f"cannot access{where}: {e.strerror or e}")
        except Exception as e:  # noqa: BLE001
            if os.environ.get("GSDEPLOY_DEBUG"):
                raise

            if is_out_of_memory(e):
                _fail(2, "out of memory: the input (a declared tensor, batch or input shape) is larger than this "
                         f"machine can hold ({short(str(e).splitlines()[0])})")
            _fail(1, f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                     "re-run with GSDEPLOY_DEBUG=1 for the traceback")

    return wrapper


def _check_deploy_flags(fuse: str | None, prune_threshold: float | None, plan: str = "auto", lut: Path | None = None,
                        refresh: bool = False) -> tuple[str, str]:
    """(plan mode, fuse mode) from --plan and --fuse: one vocabulary, --fuse only as an override."""
    from gsdeploy.plan.stage import resolve_modes  # heavy: torch

    if prune_threshold is not None:
        check_number("--prune-threshold", prune_threshold, minimum=0, maximum=MAX_PRUNE_THRESHOLD)
    return resolve_modes(plan, fuse, lut=lut is not None, refresh=refresh)


def _check_trt_flags(batch: str | None, min_batch: int | None, opt_batch: int | None, max_batch: int | None,
                     workspace_mb: int | None, dla_core: int | None) -> None:
    """export's TensorRT numbers, checked even for --engine onnx: every number from a flag is
    in range before any work."""
    _batches(batch)
    for flag, value in (("--min-batch", min_batch), ("--opt-batch", opt_batch), ("--max-batch", max_batch)):
        if value is not None:
            check_number(flag, value, integer=True, minimum=1, maximum=MAX_BATCH)
    if workspace_mb is not None:
        check_number("--workspace-mb", workspace_mb, integer=True, minimum=1, maximum=1 << 20)
    if dla_core is not None:
        check_number("--dla-core", dla_core, integer=True, minimum=0, maximum=15)


def _warn_kept_zeros(result) -> None:
    """A deploy that left removable-looking zeros in place says so in one line."""
    if result.kept_zeros:
        from gsdeploy.transforms.leftovers import warning_line  # heavy: torch

        err.print(f"warning: {warning_line(result.kept_zeros)}", highlight=False, markup=False, soft_wrap=True)


def _options(fuse: str, prune_threshold: float | None, strict: bool = False):
    from gsdeploy.transforms import DeployOptions  # heavy: torch

    return DeployOptions(fuse=fuse, prune_threshold=prune_threshold, strict=strict)


def _dense(loaded, baseline: str | None, baseline_arch: str | None, trust: bool):
    """The dense model the plan is timed against, when one is known (only reported: the plan
    chooses among deployments of the compressed model)."""
    from gsdeploy.pipeline import resolve_baseline  # heavy: torch

    try:
        return resolve_baseline(loaded, baseline, baseline_arch, tuple(loaded.input_shape), trust).module
    except GsdeployError:
        if baseline is not None:
            raise
        return None


def _make_plan(loaded, target, plan: str, fuse: str, prune_threshold, lut, refresh, dense, strict: bool = False):
    from gsdeploy.plan.stage import make_plan  # heavy: torch

    outcome = make_plan(loaded.module, tuple(loaded.input_shape), target, _options(fuse, prune_threshold, strict),
                        plan, dense=dense, lut_path=lut, refresh=refresh,
                        progress=lambda msg: err.print(msg, highlight=False, markup=False, style="dim"))
    if outcome.warning:
        err.print(outcome.warning, highlight=False, markup=False, soft_wrap=True)
    return outcome


def _check_plan(plan: str, lut: Path | None, target) -> None:
    """Read and check --lut (bounded JSON, finite numbers, the target's fingerprint), and that a
    latency plan can be made (timed here, or read from the LUT), before any model is loaded: a
    bad LUT or a target that cannot be timed is one line, not the end of a load and a deploy."""
    from gsdeploy.plan.stage import check_plannable, load_lut  # heavy: imports torch (--help stays light)

    if lut is not None:
        load_lut(lut, target)
    check_plannable(target, plan, lut is not None)


def _targets(profile: str | None, **flags):
    """The profile's targets with the flags applied, validated: built once, before any work."""
    return resolve_targets(profile, TargetFlags(**flags))


def _shape(input_shape: str | None) -> tuple[int, ...] | None:
    from gsdeploy.load import parse_input_shape  # heavy: torch

    # '' is given (an unset shell variable), not the model's own shape: parse_input_shape refuses it
    return tuple(parse_input_shape(input_shape)) if input_shape is not None else None


def _load(model: str, arch: str | None, shape: tuple[int, ...] | None, trust: bool):
    from gsdeploy.load import load_model  # heavy: torch

    return load_model(model, arch=arch, trust=trust, input_shape=shape)


def _m(x: int) -> str:
    return f"{x / 1e6:.2f}M"


@app.command()
@guarded
def zoo(archs: Annotated[bool, typer.Option("--archs", help="list the official checkpoint layouts for --arch instead")] = False) -> None:
    """List the built-in models with input shape, MACs and params."""
    from gsdeploy.metrics import count_macs, count_params  # heavy: torch
    from gsdeploy.load import ARCHS  # heavy: torch
    from gsdeploy.zoo import list_entries  # heavy: torch

    if archs:
        t = Table("--arch", "input", "baseline", "description", title="official checkpoint layouts")
        for a in ARCHS.values():
            t.add_row(a.name, "x".join(map(str, a.input_shape)), a.baseline_arch or "-", a.description)
        out.print(t)
        return
    t = Table("model", "method", "input", "MACs", "params", "baseline", "description", title="gsdeploy zoo")
    import torch  # heavy: torch

    for e in list_entries():
        with torch.device("meta"):  # shapes only: listing needs no weights
            m = e.build()
        t.add_row(e.name, e.method, "x".join(map(str, e.input_shape)), _m(count_macs(m, e.input_shape)),
                  _m(count_params(m)), e.baseline or "-", e.description)
    out.print(t)


def _plan_table(result) -> Table:
    t = Table("site", "action", "layers", "shape", "MACs", "reason", title="deployment plan")
    for d in one_per_site(result.plan):  # a padded pair is one site, not a "keep" row and a "pad width" row
        t.add_row(escape(d["site"]), d["action"], escape(", ".join(d["layers"])),
                  f"{d['shape_before']} -> {d['shape_after']}", f"{_m(d['macs_before'])} -> {_m(d['macs_after'])}",
                  escape(d["reason"]))
    return t


def _print_latency_plan(outcome, brief: bool = False) -> None:
    """The whole models a latency plan chose from (measured on the target), and its notes."""
    from gsdeploy.plan.search import VARIANT_LABELS as VARIANT_LABEL  # heavy: torch

    p = outcome.plan
    if p is None:
        out.print(f"plan: by FLOPs (fuse={outcome.options.fuse})", highlight=False)
        return
    batches = list(p.batches)
    head = [f"b{b} ms (CoV)" for b in batches] + [f"b{b} vs dense" for b in batches]
    t = Table("model", *head, "predicted ms", title=f"whole models timed on the target ({p.fingerprint.get('engine_version')}, "
              f"{p.fingerprint.get('device')}, {p.fingerprint.get('threads')} threads)")
    for v in p.variants:
        won = [b for b in batches if p.winner_at(b) == v.name]
        # the overall winner is always "chosen" (export writes it); a batch with a model of its
        # own says so beside that model
        mark = " <- chosen" if v.name == p.winner else ""
        if won and len(won) < len(batches):
            mark += (" (" if mark else " <- ") + f"fastest at b{'/'.join(map(str, won))}" + (")" if mark else "")
        label = VARIANT_LABEL.get(v.name, v.name) + mark
        cells = [f"{v.measured[b].median_ms:.3f} ({v.measured[b].cov:.0%})" if b in v.measured else "-" for b in batches]
        cells += [f"{p.speedup(v.name, b):.2f}x" if p.speedup(v.name, b) and b in v.measured else "-" for b in batches]
        pred = "/".join(f"{v.predicted_ms[b]:.3f}" for b in batches) if v.predicted_ms else "-"
        t.add_row(escape(label), *cells, pred)
    if not brief and p.variants:
        out.print(t)
    source = ("from the timing cache" if p.models_cached and not p.measured_sites else
              f"{p.measured_sites} site(s) measured, {p.cached_sites} from the cache")
    out.print(f"plan: by latency, {VARIANT_LABEL.get(p.winner, p.winner)} chosen ({source}, {p.seconds:.1f} s)",
              highlight=False)
    for note in p.notes:
        out.print(f"note: {note}", highlight=False)


def _summary(result) -> str:
    v = result.verification
    text = (f"MACs {_m(result.macs_before)} -> {_m(result.macs_after)} ({result.macs_after / max(result.macs_before, 1):.1%}), "
            f"params {_m(result.params_before)} -> {_m(result.params_after)}; "
            f"deployed vs {'thresholded ' if result.threshold_error is not None else ''}original: "
            f"max abs {v.max_abs_err:.2e}, max rel {v.max_rel_err:.2e} (tol {v.tolerance:.0e})")
    if result.threshold_error is not None:
        te = result.threshold_error
        text += f"; --prune-threshold changed outputs by max rel {te.max_rel_err:.2e} (max abs {te.max_abs_err:.2e})"
    return text


@app.command()
@guarded
def inspect(model: Annotated[str, typer.Argument(help="zoo name or checkpoint file")],
            arch: ArchOpt = None, input_shape: ShapeOpt = None, fuse: FuseOpt = None, plan: PlanOpt = "auto",
            prune_threshold: ThresholdOpt = None, trust: TrustOpt = False, profile: ProfileOpt = None,
            lut: LutOpt = None, refresh: RefreshOpt = False, strict: StrictOpt = False,
            baseline: Annotated[Optional[str], typer.Option("--baseline", help="dense model the plan is timed against (default: the known one)")] = None,
            baseline_arch: Annotated[Optional[str], typer.Option("--baseline-arch")] = None) -> None:
    """Print the deployment plan: one row per site with action, shapes, MACs before -> after and the reason;
    for a latency plan also the whole models it was chosen from, measured on the target."""
    plan, fuse = _check_deploy_flags(fuse, prune_threshold, plan, lut, refresh)
    target = _targets(profile, input_shape=_shape(input_shape))[0]
    _check_plan(plan, lut, target)
    loaded = _load(model, arch, target.input_shape, trust)
    dense = _dense(loaded, baseline, baseline_arch, trust) if plan != "flops" else None
    outcome = _make_plan(loaded, target, plan, fuse, prune_threshold, lut, refresh, dense, strict)
    out.print(_plan_table(outcome.result))
    _print_latency_plan(outcome)
    out.print(_summary(outcome.result), highlight=False)
    _warn_kept_zeros(outcome.result)


@app.command("plan")
@guarded
def plan_cmd(model: Annotated[str, typer.Argument(help="zoo name or checkpoint file")],
             arch: ArchOpt = None, input_shape: ShapeOpt = None, prune_threshold: ThresholdOpt = None,
             trust: TrustOpt = False, profile: ProfileOpt = None, refresh: RefreshOpt = False,
             baseline: Annotated[Optional[str], typer.Option("--baseline", help="dense model the plan is timed against (default: the known one)")] = None,
             baseline_arch: Annotated[Optional[str], typer.Option("--baseline-arch")] = None, strict: StrictOpt = False,
             save_lut: Annotated[Optional[Path], typer.Option("--save-lut", help="write the timings (a JSON LUT) for `--lut` on another machine")] = None,
             batch: Annotated[Optional[str], typer.Option("--batch", help="batch sizes to plan for, e.g. 1,32 (default: the profile's); `export --batch` and `bench --batch` read a LUT only at batches it was made for")] = None,
             engine: Annotated[Optional[str], typer.Option("--engine", help="the profile entry to plan for, by label or engine, e.g. trt-dla0 (default: its first)")] = None) -> None:
    """Make the latency plan on this machine (the target): time every site's candidates and the whole
    models, print the choice and, with --save-lut, write the timings so `export --lut` can use them elsewhere."""
    from gsdeploy.plan.stage import check_lut_target, save_lut as write_lut  # heavy: torch

    _check_deploy_flags(None, prune_threshold)
    if engine is not None and not engine.strip():
        raise GsdeployError("--engine names no engine")
    targets = _targets(profile, input_shape=_shape(input_shape), batches=_batches(batch),
                       engines=(engine.strip(),) if engine is not None else ())
    if engine is not None and len(targets) > 1:
        raise GsdeployError(f"--engine {engine.strip()} names {len(targets)} entries of the profile "
                            f"({', '.join(t.label for t in targets)}): a plan is for one; name it by its label")
    target = targets[0]
    _check_plan("latency", None, target)
    inputs = [Path(p) for p in (model, baseline) if p is not None and Path(p).exists()]
    if save_lut is not None:
        check_lut_target(save_lut, inputs)  # never over the model, its baseline or a file that is not a LUT
    loaded = _load(model, arch, target.input_shape, trust)
    outcome = _make_plan(loaded, target, "latency", "flops", prune_threshold, None, refresh,
                         _dense(loaded, baseline, baseline_arch, trust), strict)
    out.print(_plan_table(outcome.result))
    _print_latency_plan(outcome)
    out.print(_summary(outcome.result), highlight=False)
    _warn_kept_zeros(outcome.result)
    if save_lut is not None:
        write_lut(outcome.plan, save_lut, inputs)
        out.print(f"wrote {save_lut}", highlight=False)


@app.command()
@guarded
def export(model: Annotated[str, typer.Argument(help="zoo name or checkpoint file")],
           output: Annotated[Path, typer.Option("--output", "-o", help="artifact to write (.onnx, .engine, .ep)")],
           engine: Annotated[str, typer.Option("--engine", help="onnx | trt | torch-trt")] = "onnx",
           arch: ArchOpt = None, input_shape: ShapeOpt = None, fuse: FuseOpt = None, plan: PlanOpt = "auto",
           prune_threshold: ThresholdOpt = None, trust: TrustOpt = False, profile: ProfileOpt = None,
           lut: LutOpt = None, refresh: RefreshOpt = False,
           precision: Annotated[Optional[str], typer.Option(help="fp32 | fp16 | int8 (default: fp32 for onnx; for trt/torch-trt the profile's TensorRT entry, else fp16)")] = None,
           batch: Annotated[Optional[str], typer.Option("--batch", help="onnx: the batch sizes the latency plan is made for (default: the profile's); trt: batch sizes of the engine's profile, e.g. 1,8,32 (default: the profile's TensorRT entry)")] = None,
           min_batch: Annotated[Optional[int], typer.Option("--min-batch")] = None,
           opt_batch: Annotated[Optional[int], typer.Option("--opt-batch")] = None,
           max_batch: Annotated[Optional[int], typer.Option("--max-batch")] = None,
           workspace_mb: Annotated[Optional[int], typer.Option("--workspace-mb", help="default: the profile's TensorRT entry, else 4096")] = None,
           timing_cache: Annotated[Optional[Path], typer.Option("--timing-cache")] = None,
           dla_core: Annotated[Optional[int], typer.Option("--dla-core")] = None,
           gpu_fallback: Annotated[bool, typer.Option("--gpu-fallback", help="default: the profile's TensorRT entry")] = False,
           calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="int8: directory of .npy inputs (C,H,W or N,C,H,W) or a .npz with x")] = None,
           random_calibration: Annotated[bool, typer.Option("--random-calibration", help="int8 without --calib-data: calibrate on random inputs (latency work only; the manifest says so)")] = False,
           eval_data: Annotated[Optional[Path], typer.Option("--eval-data", help=".npz with x (and y labels): top-1 of original, deployed fp32 and the artifact")] = None,
           max_accuracy_drop: Annotated[float, typer.Option("--max-accuracy-drop", help="refuse an artifact losing more top-1 points than this on --eval-data")] = 1.0,
           keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--fp16-io", help="fp16: keep input and output fp32")] = True,
           allow_slower: Annotated[bool, typer.Option("--allow-slower", help="keep an fp16/int8 artifact that is slower than fp32 on the target (--profile)")] = False,
           strict: StrictOpt = False) -> None:
    """Deploy the model (prune, fold, fuse), verify it, and write a verified artifact plus OUT.manifest.json."""
    from gsdeploy.export.reduced import request_for_target  # heavy: torch

    if engine not in ("onnx", "trt", "torch-trt"):
        raise GsdeployError(f"--engine must be onnx, trt or torch-trt, not '{engine}'")
    from gsdeploy.loaders import trt_export_settings  # heavy: numpy

    plan, fuse = _check_deploy_flags(fuse, prune_threshold, plan, lut, refresh)
    _check_trt_flags(batch, min_batch, opt_batch, max_batch, workspace_mb, dla_core)
    # an ONNX artifact is planned for the batches given (the latency plan can differ by batch);
    # for TensorRT --batch sets the engine's optimization profile below
    plan_batches = _batches(batch) if engine == "onnx" else None
    targets = _targets(profile, input_shape=_shape(input_shape), batches=plan_batches)
    target = targets[0]
    _check_plan(plan, lut, target)
    trt = trt_export_settings(targets, precision=precision, workspace_mb=workspace_mb, timing_cache=timing_cache,
                              dla_core=dla_core, gpu_fallback=gpu_fallback or None)
    given_batches = batch is not None or any(v is not None for v in (min_batch, opt_batch, max_batch))
    if not given_batches and trt["batches"]:
        batch = ",".join(map(str, trt["batches"]))
    precision = (precision or "fp32") if engine == "onnx" else trt["precision"]
    wants = request_for_target(precision, engine, target, calib_data=calib_data, random_calibration=random_calibration,
                               eval_data=eval_data, max_accuracy_drop=max_accuracy_drop, keep_io_types=keep_io_types,
                               allow_slower=allow_slower)
    if engine != "torch-trt":
        wants.check()  # flag errors before anything is loaded
    # never over a file the export reads (`--lut F.json -o F.json` replaced the LUT with the ONNX)
    check_output_path(output, files_in(p for p in (model, calib_data, eval_data, lut, profile, timing_cache)
                                       if p is not None))
    if engine != "onnx":
        from gsdeploy.export.tensorrt import require_tensorrt  # fails fast, before any work
        if engine == "trt":
            require_tensorrt()
        else:
            from gsdeploy.export.torch_tensorrt import require_torch_tensorrt  # heavy: torch
            require_torch_tensorrt()
    loaded = _load(model, arch, target.input_shape, trust)
    inputs = None
    if engine != "torch-trt":
        from gsdeploy.export.reduced import load_precision_inputs  # heavy: torch

        inputs = load_precision_inputs(wants, tuple(loaded.input_shape))  # files checked before any deployment work
    outcome = _make_plan(loaded, target, plan, fuse, prune_threshold, lut, refresh,
                         _dense(loaded, None, None, trust) if plan != "flops" else None, strict)
    result, options = outcome.result, outcome.options
    _print_latency_plan(outcome, brief=True)
    out.print(_summary(result), highlight=False)
    _warn_kept_zeros(result)
    if engine == "onnx":
        from gsdeploy.export.onnx_artifact import write_onnx_artifact  # heavy: torch

        manifest = write_onnx_artifact(loaded, result, options, output, wants, inputs)
        c = manifest["onnx_vs_original"]
        against = "thresholded original" if result.threshold_error is not None else "original"
        out.print(f"ONNX in ONNX Runtime vs {against}: max abs {c['max_abs_err']:.2e}, max rel {c['max_rel_err']:.2e}",
                  highlight=False)
        for line in _precision_lines(manifest.get("precision")):
            out.print(line, highlight=False)
    else:
        from gsdeploy.export.trt_artifact import write_trt_artifact  # heavy: torch

        write_trt_artifact(engine, loaded, result, options, output, precision=trt["precision"], batch=batch,
                           min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                           workspace_mb=trt["workspace_mb"], timing_cache=trt["timing_cache"],
                           dla_core=trt["dla_core"], gpu_fallback=trt["gpu_fallback"], calib_data=calib_data,
                           builder_optimization_level=trt["builder_optimization_level"], wants=wants, inputs=inputs)
    out.print(f"wrote {output} and {manifest_path(output)}", highlight=False)


def _precision_lines(section) -> list[str]:
    if not section:
        return []
    lines = []
    q = section.get("quantization")
    if q:
        s = q["scheme"]
        lines.append(f"int8 {s['name']} for {s['target']} ({q['scheme_chosen_by']}): {s['reason']}")
        c = section["calibration"]
        lines.append(f"calibrated on {c['samples']} samples of {c['source']}" + ("" if c["representative"] else
                                                                                 f" - {c.get('note', '')}"))
    acc = section.get("accuracy")
    if acc:
        orig = acc["original"]
        cells = [f"original {orig['top1']:.2f}%" if acc["labelled"] else "original"]
        cells += [f"{a['name']} {a['top1']:.2f}% (agreement {a['agreement']:.2f}%)" if acc["labelled"]
                  else f"{a['name']} agreement {a['agreement']:.2f}%" for a in acc["artifacts"]]
        lines.append(f"top-1 on {acc['samples']} samples: " + ", ".join(cells))
    for r in (section.get("speed_vs_fp32") or {}).get("rows", []):
        lines.append(f"batch {r['batch']}: {section['precision']} {r['speedup']:.2f}x fp32 (median of short interleaved runs)")
    return lines


def _batches(text: str | None) -> tuple[int, ...] | None:
    """--batch: None when not given; given (even as ''), it must list batch sizes."""
    return None if text is None else parse_batches(text)


@app.command()
@guarded
def bench(model: Annotated[Optional[str], typer.Argument(help="zoo name, checkpoint, or .onnx file (timed as is, ORT engines only); default: the built-in default model")] = None,
          arch: ArchOpt = None,
          baseline: Annotated[Optional[str], typer.Option("--baseline", help="dense baseline: zoo name, checkpoint or .onnx file")] = None,
          baseline_arch: Annotated[Optional[str], typer.Option("--baseline-arch")] = None,
          profile: ProfileOpt = None,
          engine: Annotated[Optional[str], typer.Option("--engine", help="entries of the profile by label or engine (ort | torch | trt), comma-separated; default: all of them")] = None,
          batch: Annotated[Optional[str], typer.Option("--batch", help="batch sizes, e.g. 1,32")] = None,
          output: Annotated[Path, typer.Option("--output", "-o", help="directory for the CSV and Markdown tables")] = Path("results"),
          input_shape: ShapeOpt = None, fuse: FuseOpt = None, plan: PlanOpt = "auto",
          prune_threshold: ThresholdOpt = None, trust: TrustOpt = False, lut: LutOpt = None,
          refresh: RefreshOpt = False,
          threads: Annotated[Optional[int], typer.Option("--threads", help="intra-op threads (default: all cores)")] = None,
          warmup_s: Annotated[Optional[float], typer.Option("--warmup-s", help="warm-up time per model and batch")] = None,
          min_iterations: Annotated[Optional[int], typer.Option("--min-iterations")] = None,
          min_duration_s: Annotated[Optional[float], typer.Option("--min-duration-s")] = None,
          max_cov: Annotated[Optional[float], typer.Option("--max-cov", help="warn about rows whose latency CoV is above this (0.025 = 2.5%)")] = None,
          precision: Annotated[Optional[str], typer.Option("--precision", help="override the profile's precision: fp32 | fp16 | int8; on ORT CPU a list, e.g. fp32,int8, times the int8/fp16 ONNX of both models beside the fp32 ones")] = None,
          calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="int8: directory of .npy inputs or a .npz with x")] = None,
          random_calibration: Annotated[bool, typer.Option("--random-calibration", help="int8 without --calib-data: random calibration inputs (latency only)")] = False,
          eval_data: Annotated[Optional[Path], typer.Option("--eval-data", help=".npz with x (and y): top-1 of every model in the rows")] = None,
          name: Annotated[Optional[str], typer.Option("--name", help="file stem of the result tables")] = None,
          memory: Annotated[bool, typer.Option("--memory", help="also measure peak RSS of ORT CPU sessions (a child process, ~1.5 s per model and batch)")] = False,
          resume: Annotated[bool, typer.Option("--resume", help="keep the rows of an existing DIR/<stem>.csv and skip the (engine, batch) groups it already has")] = False,
          per_layer: Annotated[bool, typer.Option("--per-layer", help="after timing, profile both models layer by layer (ORT's profiler, TensorRT's layer profiler) in a separate run and write DIR/<stem>.layers.csv/.md: where the time goes, deployed vs dense")] = False) -> None:
    """Benchmark the deployed model against its dense baseline, interleaved, and write CSV + Markdown tables.

    Settings come from the profile (default cpu-ort): every engine entry × precision is timed
    and labelled; flags given explicitly override it. Rows are written to DIR/<stem>.csv as
    each (engine, batch) group finishes, so an interrupted sweep keeps what it measured;
    without --resume an existing CSV (and MD) of the same stem is replaced once the first new
    group is done, never before."""
    from gsdeploy.bench.precision import parse_precisions, reduced_precisions  # heavy: torch
    from gsdeploy.pipeline import BenchRequest, run_bench_job  # heavy: torch
    from gsdeploy.zoo import DEFAULT_MODEL  # heavy: torch

    plan, fuse = _check_deploy_flags(fuse, prune_threshold, plan, lut, refresh)
    engines = tuple(comma_list(engine, "--engine", "profile entries or engines")) if engine is not None else ()
    flags = dict(engines=engines, batches=_batches(batch),
                 threads=threads, input_shape=_shape(input_shape), warmup_s=warmup_s,
                 min_iterations=min_iterations, min_duration_s=min_duration_s, max_cov=max_cov)
    precisions = parse_precisions(precision)
    targets = _targets(profile, **flags)
    reduced = reduced_precisions(precisions, targets)
    if reduced is None and precisions:
        targets = _targets(profile, precision=precisions[0], **flags)
    require_available(targets)
    _check_plan(plan, lut, targets[0])  # the target the compressed model is planned for
    request = BenchRequest(
        model=model or DEFAULT_MODEL, targets=targets, out_dir=output, arch=arch, baseline=baseline,
        baseline_arch=baseline_arch, fuse=fuse, plan=plan, lut=lut, refresh=refresh,
        prune_threshold=prune_threshold, trust=trust, name=name,
        command="gsdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:]), memory=memory, resume=resume,
        per_layer=per_layer, reduced=reduced or (), calib_data=calib_data, random_calibration=random_calibration,
        eval_data=eval_data)
    result = run_bench_job(request)
    for line in result.warnings:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(_bench_table(result.rows))
    out.print("wrote " + ", ".join(str(f) for f in result.files), highlight=False)


def _bench_table(df) -> Table:
    t = Table("model", "role", "engine", "batch", "median ms", "p90 ms", "CoV", "thr/s", "speedup", "FLOP speedup",
              "efficiency", title="latency against the dense baseline")
    for _, r in df.iterrows():
        t.add_row(escape(str(r["model"])), str(r["role"]), escape(str(r["engine"])), str(r["batch"]),
                  f"{r['latency_ms_median']:.3f}", f"{r['latency_ms_p90']:.3f}", f"{r['latency_cov']:.1%}",
                  f"{r['throughput_per_s']:.0f}", f"{r['speedup_vs_baseline']:.2f}x", f"{r['flop_speedup']:.2f}x",
                  f"{r['efficiency']:.2f}")
    return t


@app.command()
@guarded
def sweep(sweep_file: Annotated[Path, typer.Argument(help="sweep YAML: models, profiles, batches (see README)")],
          output: Annotated[Path, typer.Option("--output", "-o", help="directory for <sweep>.csv and .md")] = Path("results"),
          cluster: Annotated[Optional[str], typer.Option("--cluster", help="ray://HOST:PORT, HOST:PORT or auto: run on that Ray cluster (default: here)")] = None,
          resume: Annotated[bool, typer.Option("--resume", help="keep the finished jobs of an existing <sweep>.csv and run only the others")] = False,
          retries: Annotated[Optional[int], typer.Option("--retries", help="times a failed job is tried again (default: the file's, else 2)")] = None,
          timeout_s: Annotated[Optional[float], typer.Option("--timeout-s", help="cluster: a job running longer is stopped and retried")] = None,
          threads: Annotated[Optional[int], typer.Option("--threads")] = None,
          warmup_s: Annotated[Optional[float], typer.Option("--warmup-s")] = None,
          min_iterations: Annotated[Optional[int], typer.Option("--min-iterations")] = None,
          min_duration_s: Annotated[Optional[float], typer.Option("--min-duration-s")] = None) -> None:
    """Run a sweep file's jobs (model x profile x batch) here one after another, or on a Ray cluster.

    Rows are appended to DIR/<sweep>.csv as each job finishes; a job that fails is tried again (on
    another node of its kind on a cluster) and then recorded as failed with its reason. The whole
    file and every flag are checked before any job starts. Exit 1 if any job failed."""
    from gsdeploy.farm import Timing, load_sweep, run_sweep_spec  # heavy: pandas

    spec = load_sweep(sweep_file, Timing(warmup_s=warmup_s, min_iterations=min_iterations,
                                         min_duration_s=min_duration_s, threads=threads),
                      retries=retries, timeout_s=timeout_s)
    command = "gsdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    summary = run_sweep_spec(spec, output, cluster=cluster, resume=resume, command=command)
    out.print(f"{summary.done} of {summary.jobs} jobs done ({summary.skipped} from an earlier run), "
              f"{len(summary.failed)} failed; wrote {summary.csv_path}"
              + (f" and {summary.md_path}" if summary.md_path else ""), highlight=False)
    for line in summary.warnings:
        err.print(line, highlight=False, markup=False, soft_wrap=True)
    if summary.failed:
        for line in summary.failed:
            err.print(f"failed: {line}", highlight=False, markup=False, soft_wrap=True)
        _fail(1, f"{len(summary.failed)} of {summary.jobs} sweep jobs failed (their reasons are in {summary.csv_path})")


@app.command()
@guarded
def report(paths: Annotated[list[Path], typer.Argument(help="result CSV files or directories of them")],
           fmt: Annotated[str, typer.Option("--format", help="md | csv | html (one self-contained page: tables, plots, environment, plans, per-layer profiles, claims)")] = "md",
           plot: Annotated[Optional[Path], typer.Option("--plot", help="also draw latency vs MACs and speedups to this PNG")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the table here instead of stdout")] = None) -> None:
    """Merge result rows from many runs and devices into latency tables with speedups vs the dense baseline."""
    from gsdeploy.report import FORMATS, load_inputs, report_text  # heavy: pandas

    if fmt not in FORMATS:  # before reading anything
        raise GsdeployError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    inputs = load_inputs(paths)
    read = files_in(paths)
    check_targets([p for p in (output, plot) if p is not None], read)  # both, before writing either
    df = inputs.rows
    for skipped in inputs.skipped:
        err.print(f"skipped {skipped}", highlight=False, markup=False)
    text = report_text(inputs, fmt)
    if output is not None:
        write_text_atomic(output, text, read)
        out.print(f"wrote {output}", highlight=False)
    else:
        typer.echo(text)
    if plot is not None:
        from gsdeploy.report import plot as draw  # heavy: matplotlib, when drawn

        draw(df, plot)
        out.print(f"wrote {plot}", highlight=False)


@app.command()
@guarded
def validate(claims: Annotated[Path, typer.Argument(help="claims YAML file (or a directory of them)")],
             profile: Annotated[Optional[str], typer.Option("--profile", help="profile for timed claims (default: each claim's own)")] = None,
             output: Annotated[Optional[Path], typer.Option("--output", "-o", help="also write the verdicts here: .csv (read back by `gsdeploy report`) or .md")] = None,
             trust: TrustOpt = False) -> None:
    """Check claims from papers (speedup, FLOP/params ratio, latency, top-1 error): measured beside the paper's value; exit 1 on any FAIL."""
    from gsdeploy.pipeline import measure_claim  # heavy: torch
    from gsdeploy.profiles import load_profile  # heavy: yaml, ~25 ms that --help need not pay
    from gsdeploy.report.claims import evaluate_claims, exit_code, load_claims, render_verdicts, write_verdicts  # heavy: torch

    if profile is not None:
        load_profile(profile)  # a typo fails before any work
    to_check = load_claims(claims)
    if output is not None:
        # before any work; never over the claims or a model it reads
        check_target(output, files_in([claims, *(p for c in to_check for p in (c.model, c.baseline) if p)]))
    load_fn = None
    if trust:  # the claims' model files are trusted too, for ratios and for timing
        from gsdeploy.load import load_model  # heavy: torch

        load_fn = functools.partial(load_model, trust=True)
    verdicts = evaluate_claims(to_check, functools.partial(measure_claim, trust=trust), profile=profile,
                               load_fn=load_fn)
    typer.echo(render_verdicts(verdicts))
    if output is not None:
        write_verdicts(verdicts, output, "gsdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
        out.print(f"wrote {output}", highlight=False)
    raise typer.Exit(exit_code(verdicts))


class Terminated(BaseException):
    """SIGTERM (timeout, systemd, CI runners): unwinds like Ctrl-C, so every `finally` runs (temp
    files and scratch directories removed, the bench lock released). A BaseException, so no
    `except Exception` on the way swallows it."""


def _on_sigterm(signum, frame) -> None:  # noqa: ANN001 - signal handler signature
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """The console script: typer's parsing without its boxes, SIGTERM handled like SIGINT, and
    every way out one `error:` line and an exit code."""
    # torch's own deprecation notices (e.g. pytree's LeafSpec when loading .pt2) are not the user's to fix
    warnings.filterwarnings("ignore", category=FutureWarning)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:] if argv is None else argv, prog_name="gsdeploy", standalone_mode=False)
    except TyperException as e:  # a bad flag or argument (click's UsageError family)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        if message:  # empty when click has printed the help already (no arguments at all)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}{escape(hint)}", highlight=False,
                      soft_wrap=True)
        code = getattr(e, "exit_code", 2)
    except Terminated:
        err.print("[bold red]error:[/] terminated (SIGTERM)", highlight=False)
        code = 143
    except (KeyboardInterrupt, typer.Abort):
        err.print("[bold red]error:[/] interrupted", highlight=False)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
