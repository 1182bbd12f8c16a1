"""The summary both truth checks print (`ort_truth.py`, `trt_truth.py`): one line a method with the
median of its per-round medians, its median CoV and its ratio to the reference, then gsdeploy's
ratio round by round (a ratio that moves between rounds is drift, not bias)."""

from __future__ import annotations

import statistics


def print_summary(medians: dict[str, list[float]], covs: dict[str, list[float]], reference: str) -> None:
    print()
    print(f"{'method':<10} {'median ms (median of rounds)':>30} {'CoV (median)':>14} {'ratio to ' + reference:>16}")
    ref = statistics.median(medians[reference])
    for k, v in medians.items():
        m = statistics.median(v)
        print(f"{k:<10} {m:>30.4f} {statistics.median(covs[k]):>14.3f} {m / ref:>16.3f}")
    per_round = [g / p for g, p in zip(medians["gsdeploy"], medians[reference])]
    print(f"\ngsdeploy / {reference} per round: {', '.join(f'{x:.3f}' for x in per_round)}; "
          f"median {statistics.median(per_round):.3f}")
