"""Issue 3 table: every seed family's checkpoint deployed and timed against its dense baseline.

For each checkpoint written by the official code (tests/fixtures/official, shared/fixtures/hinge):
MACs and params before -> after deployment, the official FLOP ratio recorded when the file was
made, and ONNX Runtime CPU latency vs the dense baseline at batch 1 and 32 (one interleaved
`gsdeploy bench` job per row). Run from the repo root:

    python benchmarks/families.py [--out results] [--min-duration-s 1.0]
"""

from __future__ import annotations

import argparse
import json
import lzma
import shlex
import sys
import tempfile
from pathlib import Path

import pandas as pd

from gsdeploy.metrics import count_macs, count_params
from gsdeploy.load import load_model
from gsdeploy.pipeline import BenchRequest, run_bench_job
from gsdeploy.target import TargetFlags, resolve_targets

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO / "tests" / "fixtures" / "official"
SHARED = REPO.parent / "shared" / "fixtures" / "hinge"

# (family, checkpoint, arch, baseline checkpoint or zoo name, baseline arch, note on the baseline)
CASES = [
    ("Hinge ResNet-20", "shared:hinge_resnet20_cifar10.pt", "hinge_resnet20", "resnet20", None, "zoo dense ResNet-20"),
    ("Hinge ResNeXt-20", "shared:hinge_resnext20_cifar10.pt", "hinge_resnext20", "resnext20_cifar10.pt.xz", "resnext20", "official dense ResNeXt-20"),
    ("Hinge ResNet-164", "hinge_resnet164_cifar10.pt.xz", "hinge_resnet164", "resnet164_cifar100.pt.xz", "resnet164", "official dense ResNet-164 (CIFAR-100 head)"),
    ("Hinge ResNeXt-164", "hinge_resnext164_cifar100.pt.xz", "hinge_resnext164", "resnext164_cifar10.pt.xz", "resnext164", "official dense ResNeXt-164 (CIFAR-10 head)"),
    ("Hinge VGG-16", "hinge_vgg16_cifar10.pt.xz", "hinge_vgg16", "vgg16_cifar10.pt.xz", "vgg16", "official dense VGG-16"),
    ("Hinge WRN-16-2 (unmerged)", "hinge_wrn16_2_cifar100.pt.xz", "hinge_wrn", "zoo:wrn16_2_cifar100", None, "dense WRN-16-2 built by gsdeploy"),
    ("Hinge WRN-16-2 (merged)", "hinge_wrn_merge16_2_cifar100.pt.xz", "hinge_wrn", "zoo:wrn16_2_cifar100", None, "dense WRN-16-2 built by gsdeploy"),
    ("Hinge DenseNet-40", "hinge_densenet40_cifar10.pt.xz", "hinge_densenet40", "densenet40_cifar100.pt.xz", "densenet40", "official dense DenseNet-40 (CIFAR-100 head)"),
    ("FGA ResNet-56", "fga_resnet56_cifar10.pt.xz", "fga_resnet56", "resnet56", None, "zoo dense ResNet-56"),
    ("FGA VGG-16", "fga_vgg16_cifar10.pt.xz", "fga_vgg16", "vgg16_cifar10.pt.xz", "vgg16", "official dense VGG-16"),
    ("FGA DenseNet-40", "fga_densenet40_cifar10.pt.xz", "fga_densenet40", "densenet40_cifar100.pt.xz", "densenet40", "official dense DenseNet-40 (CIFAR-100 head)"),
    ("DWGL ResNet-56 (zeros in place)", "dwgl_resnet56_cifar10.pt.xz", "resnet56", "resnet56", None, "zoo dense ResNet-56"),
]


def materialize(spec: str, tmp: Path) -> str:
    """A usable path or zoo name for a case entry (.xz fixtures are unpacked)."""
    if spec.startswith("shared:"):
        return str(SHARED / spec.split(":", 1)[1])
    if spec.startswith("zoo:"):
        import torch  # heavy: torch, only for the zoo-made fixture

        from gsdeploy.zoo.weights import init_weights  # only for the zoo-made fixture
        from gsdeploy.zoo.wrn import WideResNet  # only for the zoo-made fixture

        path = tmp / f"{spec[4:]}.pt"
        torch.save(init_weights(WideResNet(16, 2, 100)).state_dict(), path)
        return str(path)
    if spec.endswith(".xz"):
        path = tmp / spec[:-3]
        path.write_bytes(lzma.decompress((OFFICIAL / spec).read_bytes()))
        return str(path)
    return spec


def official_ratio(spec: str) -> float | None:
    name = spec.split(":")[-1].removesuffix(".xz").removesuffix(".pt")
    for manifest in (OFFICIAL / "manifest.json", SHARED / "manifest.json"):
        if manifest.exists():
            for e in json.loads(manifest.read_text())["entries"]:
                if e["name"] == name and "flops_ratio" in e:
                    return float(e["flops_ratio"])
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "results")
    ap.add_argument("--min-duration-s", type=float, default=1.0)
    ap.add_argument("--min-iterations", type=int, default=30)
    ap.add_argument("--only", default=None, help="substring of the family names to run")
    ap.add_argument("--plan", default="auto", choices=["auto", "latency", "flops"], help="the deployment plan (as bench --plan)")
    args = ap.parse_args()
    command = "python benchmarks/families.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for family, ckpt, arch, base, base_arch, base_note in CASES:
            if args.only and args.only.lower() not in family.lower():
                continue
            path, base_path = materialize(ckpt, tmp), materialize(base, tmp)
            loaded = load_model(path, arch=arch)
            targets = resolve_targets("cpu-ort", TargetFlags(
                engines=("ort",), batches=(1, 32), warmup_s=0.3, min_iterations=args.min_iterations,
                min_duration_s=args.min_duration_s))
            req = BenchRequest(model=path, targets=targets, arch=arch, baseline=base_path, baseline_arch=base_arch,
                               out_dir=tmp / "runs", plan=args.plan, name=Path(path).stem, command=command,
                               progress=False)
            df = run_bench_job(req).rows
            comp, dense = df[df.role == "compressed"], df[df.role == "baseline"]
            b1, b32 = comp[comp.batch == 1].iloc[0], comp[comp.batch == 32].iloc[0]
            rows.append({
                "family": family, "checkpoint": Path(ckpt.split(":")[-1]).name, "arch": arch,
                "macs_before": count_macs(loaded.module, loaded.input_shape), "macs_after": int(b1.macs),
                "params_before": count_params(loaded.module), "params_after": int(b1.params),
                "dense_macs": int(dense.iloc[0].macs), "official_flop_ratio": official_ratio(ckpt),
                "deployed_flop_ratio": int(b1.macs) / int(dense.iloc[0].macs),
                "max_rel_err": float(comp.max_rel_err.max()),
                "b1_ms": b1.latency_ms_median, "b1_dense_ms": dense[dense.batch == 1].iloc[0].latency_ms_median,
                "b1_speedup": b1.speedup_vs_baseline,
                "b32_ms": b32.latency_ms_median, "b32_dense_ms": dense[dense.batch == 32].iloc[0].latency_ms_median,
                "b32_speedup": b32.speedup_vs_baseline, "baseline": base_note,
                "cpu": b1.cpu, "threads": int(b1.threads), "ort_version": b1.ort_version,
            })
            print(f"{family}: MACs {rows[-1]['macs_before'] / 1e6:.1f}M -> {rows[-1]['macs_after'] / 1e6:.1f}M, "
                  f"speedup b1 {b1.speedup_vs_baseline:.2f}x b32 {b32.speedup_vs_baseline:.2f}x", flush=True)
    table = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "families_ort_cpu.csv", index=False)
    md = [f"# Seed families: deployment and ORT CPU latency vs the dense baseline\n",
          f"Command: `{command}`  \nCPU: {rows[0]['cpu'] if rows else '-'}, threads {rows[0]['threads'] if rows else '-'}, "
          f"onnxruntime {rows[0]['ort_version'] if rows else '-'}; checkpoints written by the official code "
          "(random weights, emulated group sparsity; see tests/fixtures/official/manifest.json).\n",
          "| family | arch | MACs before → after | params before → after | official FLOP ratio | deployed / dense MACs "
          "| b1 ms (dense) | b1 speedup | b32 ms (dense) | b32 speedup | baseline |",
          "|---|---|---|---|---:|---:|---|---:|---|---:|---|"]
    for r in rows:
        ofr = f"{r['official_flop_ratio']:.3f}" if r["official_flop_ratio"] is not None else "–"
        md.append(f"| {r['family']} | {r['arch']} | {r['macs_before'] / 1e6:.1f}M → {r['macs_after'] / 1e6:.1f}M | "
                  f"{r['params_before'] / 1e3:.0f}k → {r['params_after'] / 1e3:.0f}k | {ofr} | {r['deployed_flop_ratio']:.3f} | "
                  f"{r['b1_ms']:.3f} ({r['b1_dense_ms']:.3f}) | {r['b1_speedup']:.2f}× | {r['b32_ms']:.2f} ({r['b32_dense_ms']:.2f}) | "
                  f"{r['b32_speedup']:.2f}× | {r['baseline']} |")
    (args.out / "families_ort_cpu.md").write_text("\n".join(md) + "\n")
    print(f"wrote {args.out / 'families_ort_cpu.csv'} and .md")


if __name__ == "__main__":
    main()
