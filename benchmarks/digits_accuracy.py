"""Accuracy of the digits CNN (tests/digits.py: trained on scikit-learn's 8x8 digits, compressed
with zero groups and a factorized pair) as the original module, the deployed fp32 ONNX, the int8
Q/DQ ONNX of both schemes and the fp16 ONNX, each made by `gsdeploy export` and read from its
manifest. Writes a Markdown table with the commands.

    python benchmarks/digits_accuracy.py [--out results/int8_digits_accuracy.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from digits import load_digits_split, save_program, top1, train_digits_cnn  # noqa: E402


def export(args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "gsdeploy", "export", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{r.stdout}\n{r.stderr}")
    out = Path(args[args.index("-o") + 1])
    return json.loads(out.with_name(out.stem + ".manifest.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "results" / "int8_digits_accuracy.md")
    a = ap.parse_args()
    model = train_digits_cnn()
    x_train, _, x_test, y_test = load_digits_split()
    rows, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        pt2 = save_program(model, t / "digits.pt2")
        np.savez(t / "calib.npz", x=x_train[:256])
        np.savez(t / "eval.npz", x=x_test, y=y_test)
        common = ["--eval-data", str(t / "eval.npz")]
        runs = [
            ("fp32", [str(pt2), *common, "-o", str(t / "fp32.onnx")]),
            ("int8 U8S8 (ORT CPU)", [str(pt2), "--precision", "int8", "--calib-data", str(t / "calib.npz"), *common,
                                     "--allow-slower", "-o", str(t / "u8s8.onnx")]),
            ("int8 S8S8 (TensorRT scheme, run in ORT CPU)",
             [str(pt2), "--precision", "int8", "--calib-data", str(t / "calib.npz"), "--profile", "server-gpu-ort-trt",
              *common, "-o", str(t / "s8s8.onnx")]),
            ("fp16 (I/O fp32)", [str(pt2), "--precision", "fp16", *common, "--allow-slower", "-o", str(t / "fp16.onnx")]),
        ]
        for label, args in runs:
            m = export(args)
            acc = m["precision"]["accuracy"]
            art = acc["artifacts"][-1]
            if not rows:
                rows.append(("original module (torch)", acc["original"]["top1"], 100.0, 0.0, "–", m))
            speed = (m["precision"].get("speed_vs_fp32") or {}).get("rows", [])
            rows.append((label if label != "fp32" else "deployed fp32 ONNX", art["top1"], art["agreement"],
                         art["drop_pts"], ", ".join(f"b{r['batch']} {r['speedup']:.2f}x" for r in speed) or "–", m))
            commands.append("gsdeploy export " + shlex.join(args).replace(str(t), "$TMP"))
    m0 = rows[0][5]
    lines = ["# Digits CNN: top-1 of the original, the deployed fp32 and the reduced-precision artifacts", "",
             f"- data: scikit-learn digits (8x8), trained on 1297 images, evaluated on the other {len(y_test)}; "
             "calibration: 256 training images",
             f"- compression: MACs {m0['macs']['before']} -> {m0['macs']['after']} (zero groups removed, "
             "factorized pair kept)",
             f"- torch-side check: original top-1 {top1(model, x_test, y_test):.2f}%",
             f"- versions: {', '.join(f'{k} {v}' for k, v in m0['versions'].items() if v)}",
             "- produced by: `python benchmarks/digits_accuracy.py` (runs the commands below; $TMP is a temp dir)", "",
             "| model | top-1 % | top-1 agreement with original % | drop (points) | int8/fp16 vs fp32 speed (export check) |",
             "|---|---:|---:|---:|---|"]
    for label, t1, agree, drop, speed, _ in rows:
        lines.append(f"| {label} | {t1:.2f} | {agree:.2f} | {drop:.2f} | {speed} |")
    lines += ["", "Commands:", ""] + [f"- `{c}`" for c in commands] + [""]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
