"""Live per-device progress of a sweep: jobs queued, running, done and failed for each profile."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.live import Live
from rich.table import Table

STATES = ("queued", "running", "done", "failed")


class SweepProgress:
    """Counts per profile; `move(profile, from_state, to_state)` as jobs change state. Drawn on
    stderr a few times a second (a redraw competes with local timing runs for a core)."""

    def __init__(self, profiles: dict[str, int], nodes: dict[str, int] | None = None, enabled: bool = True) -> None:
        self.counts = {p: Counter(queued=n) for p, n in profiles.items()}
        self.nodes = nodes
        self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=2,
                          transient=False) if enabled else None

    def _table(self) -> Table:
        cols = ["profile"] + (["nodes"] if self.nodes is not None else []) + list(STATES)
        t = Table(*cols, title="gsdeploy sweep")
        for p, c in self.counts.items():
            cells = [p] + ([str(self.nodes.get(p, 0))] if self.nodes is not None else [])
            t.add_row(*cells, *(str(c[s]) for s in STATES))
        return t

    def set_nodes(self, nodes: dict[str, int]) -> None:
        self.nodes = nodes
        self._redraw()

    def move(self, profile: str, src: str, dst: str) -> None:
        c = self.counts[profile]
        c[src] -= 1
        c[dst] += 1
        self._redraw()

    def _redraw(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def __enter__(self) -> "SweepProgress":
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._table(), refresh=True)
            self._live.__exit__(*exc)
