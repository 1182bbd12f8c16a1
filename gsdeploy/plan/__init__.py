"""The plan stage: choose, per site, how to deploy a compressed model for its Target.

sites.py finds the sites (factorized pairs, widths) and builds each candidate as an isolated
subgraph; timing.py times modules with the target's own runner and the bench's scheduler;
cache.py keeps timings per target fingerprint (and reads/writes LUTs, as untrusted JSON);
search.py proposes per site and lets whole models decide; stage.py is the entry point the CLI
and the bench pipeline call (`make_plan`).
"""
