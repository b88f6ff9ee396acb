"""delivery.png: what each client's handlers saw, per case (see benchmarks/delivery.py).

Most bars of a good run are zero, which draws nothing: every bar carries its number,
and each panel says how many messages it counts, so an empty-looking panel reads as
"none lost" rather than "no data".
"""

from __future__ import annotations

from typing import Any

from ._common import OURS, TELETHON_DEFAULT, TELETHON_FOREVER, Scenario

__all__ = ["plot"]

KINDS = (OURS, TELETHON_DEFAULT, TELETHON_FOREVER)
_SHORT = {
    OURS: "resilient_tg",
    TELETHON_DEFAULT: "telethon\n(defaults)",
    TELETHON_FOREVER: "telethon\n(retries=None)",
}
_WIDTH = 0.25


def plot(scenario: Scenario, fig: Any) -> None:
    per = scenario.raw["per_client"]
    quiet = scenario.raw.get("quiet")
    ax = fig.add_subplot(1, 2 if quiet else 1, 1)
    incoming = max(per[k]["incoming"] for k in KINDS)
    own = max(per[k]["own_sent"] for k in KINDS)
    _bars(
        ax,
        per,
        (
            ("lost", "lost deliveries"),
            ("duplicated", "duplicated deliveries"),
            ("duplicated_sends", "duplicated sends"),
        ),
    )
    ax.set_title(
        f"{len(scenario.raw['faults'])} random faults\n"
        f"(~{incoming} messages to each, ~{own} sends of its own)",
        fontsize=9,
    )
    if quiet:
        _plot_quiet(quiet, fig.add_subplot(1, 2, 2))


def _bars(ax: Any, per: dict[str, Any], metrics: tuple[tuple[str, str], ...]) -> None:
    top = 0
    for i, (key, label) in enumerate(metrics):
        xs = [j + (i - 1) * _WIDTH for j in range(len(KINDS))]
        values = [per[k][key] for k in KINDS]
        top = max(top, *values)
        bars = ax.bar(xs, values, _WIDTH, label=label, color=f"C{i}")
        ax.bar_label(bars, [str(v) for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(KINDS)), [_SHORT[k] for k in KINDS], fontsize=8)
    ax.set_ylabel("messages")
    ax.set_ylim(0, max(1, top) * 1.25)  # room for the labels; a zero run still has a scale
    if top == 0:
        ax.text(0.5, 0.5, "none, for every client", transform=ax.transAxes, ha="center")
    ax.legend(fontsize=7, loc="upper left")


def _plot_quiet(quiet: dict[str, Any], ax: Any) -> None:
    per = quiet["per_client"]
    _bars(
        ax,
        per,
        (
            ("late_or_lost_in_window", f"not in {quiet['window']:g} s"),
            ("never_delivered", "never"),
            ("duplicated", "duplicated"),
        ),
    )
    total = per[OURS]["sent_while_down"]
    ax.set_title(f"quiet after fault\n({total} messages sent to each while down)", fontsize=9)
