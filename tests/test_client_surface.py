"""ResilientClient's public surface is its documented API only: the hooks its
connections report to live on an internal object, and its parts import without cycles."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import resilient_tg
from resilient_tg import ResilientClient
from resilient_tg.stores import MemoryStore

# The documented API (docs/reference.md, DESIGN "Public API"): methods and properties...
PUBLIC_MEMBERS = {
    "add_event_handler",
    "health",
    "on",
    "on_auth_lost",
    "on_connected",
    "on_disconnected",
    "on_gap",
    "on_reconnecting",
    "on_rejected",
    "on_state_change",
    "run_until_signal",
    "state",
    "status_url",
    "store",
    "telegram",
    "wait_connected",
}
# ...and the settings given to the constructor, readable as attributes.
PUBLIC_SETTINGS = {
    "cache",  # the MessageCache made for this client (None without one)
    "flood_sleep_threshold",
    "flush_interval",
    "holder",
    "keepalive_policy",
    "lease_ttl",
    "max_queued_requests",
    "reconnect_policy",
    "request_timeout",
    "shutdown_timeout",
}
LINK_HOOKS = {
    "abort_link",
    "attempt_failed",
    "before_attempt",
    "packet_received",
    "transport_down",
    "transport_up",
}


def test_resilient_client_exposes_only_its_documented_api() -> None:
    client = ResilientClient(MemoryStore(), 1, "hash")
    # Settings are slots: instance attributes, not members of the class's API.
    class_names = {
        name
        for name in dir(ResilientClient)
        if not name.startswith("_")
        and not isinstance(getattr(ResilientClient, name), types.MemberDescriptorType)
    }
    assert class_names == PUBLIC_MEMBERS
    instance_names = {name for name in dir(client) if not name.startswith("_")}
    assert instance_names == PUBLIC_MEMBERS | PUBLIC_SETTINGS
    assert not LINK_HOOKS & instance_names


def _runtime_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports when it runs (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_the_client_parts_import_each_other_without_a_cycle() -> None:
    """DESIGN: the parts wired by _client.py have narrow interfaces and no cycles (types
    of each other are imported under TYPE_CHECKING only)."""
    package = Path(resilient_tg.__file__).parent
    graph = {
        path.stem: _runtime_imports(path)
        for path in package.glob("_*.py")
        if path.stem != "__init__"
    }
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done" or module not in graph:
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join([*trail, module])}"
        state[module] = "open"
        for target in sorted(graph[module]):
            visit(target, [*trail, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    assert {"_supervisor", "_requests", "_upkeep", "_health"} <= graph["_client"]
    assert "_postconnect" in graph["_supervisor"]
