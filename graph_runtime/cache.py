"""Merkle cache keys for nodes, and the bounded store of node outputs that outlives a run.

A node's key hashes its class, version, literal inputs and, for each link, the upstream node's
key and output index, so keys depend on the structure and values of the whole upstream graph and
never on node ids, titles or positions. COMBO inputs listing a model folder also hash the chosen
file's size and modification time, so replacing a file re-runs its loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graph_runtime.api import Combo, Node
from graph_runtime.folders import FolderFiles, resolve_file

POLICIES = ("none", "lru", "ram-bounded")
DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 4 << 30

_FILE_INPUTS: dict[type[Node], dict[str, str]] = {}


def _file_inputs(cls: type[Node]) -> dict[str, str]:
    """Input name -> model folder kind, for the COMBO inputs of ``cls`` that list files."""
    found = _FILE_INPUTS.get(cls)
    if found is None:
        found = {
            s.name: s.options.kind
            for s in cls.inputs
            if isinstance(s, Combo) and isinstance(s.options, FolderFiles)
        }
        _FILE_INPUTS[cls] = found
    return found


def _literal_text(value: Any) -> str:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return repr(value)
    return json.dumps(value, sort_keys=True, default=repr)


def _file_stamp(kind: str, name: str) -> str:
    try:
        stat = resolve_file(kind, name).stat()
    except (FileNotFoundError, OSError):
        return "missing"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def node_key(
    cls: type[Node], literals: dict[str, Any], upstream: dict[str, tuple[str, int]], salt: str = ""
) -> str:
    """The Merkle key of one node; ``upstream`` maps input names to ``(upstream key, output index)``.

    ``salt`` makes the key unique (non-deterministic nodes), which also re-keys every descendant.
    """
    parts = [cls.__name__, str(cls.version), salt]
    files = _file_inputs(cls)
    for name in sorted(literals):
        parts.append(f"{name}={_literal_text(literals[name])}")
        if name in files:
            parts.append(_file_stamp(files[name], literals[name]))
    for name in sorted(upstream):
        key, index = upstream[name]
        parts.append(f"{name}<{key}:{index}")
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def nbytes(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes of tensor data reachable from ``value`` (tuples, lists, dicts, dataclasses, modules).

    Objects may report their own size through an integer ``nbytes`` attribute (numpy arrays do).
    """
    seen = _seen if _seen is not None else set()
    if id(value) in seen or value is None or isinstance(value, (str, int, float, bool, bytes)):
        return len(value) if isinstance(value, bytes) else 0
    seen.add(id(value))
    torch = sys.modules.get("torch")  # no tensor can exist before torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if torch is not None and isinstance(value, torch.nn.Module):
        tensors = [*value.parameters(), *value.buffers()]
        return sum(nbytes(t, seen) for t in tensors)
    if isinstance(value, (tuple, list, set, frozenset)):
        return sum(nbytes(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v, seen) for v in value.values())
    own = getattr(value, "nbytes", None)
    if isinstance(own, int) and not isinstance(own, bool):
        return own
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    return 0


@dataclass(slots=True)
class Entry:
    """What a node produced: its outputs, its UI dict and the tensor bytes they hold."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None
    nbytes: int


def available_ram() -> int | None:
    """Bytes of RAM the system can still hand out (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _total_ram() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class OutputCache:
    """Node outputs by key, kept across runs in one process.

    Policies: ``none`` keeps nothing between runs; ``lru`` evicts the least recently used entry
    beyond ``max_entries`` or ``max_bytes``; ``ram-bounded`` has no entry limit and evicts the least
    recently used entries beyond ``max_bytes`` or while the system has less than ``min_free_ram``
    bytes available (default: a tenth of physical RAM).
    """

    def __init__(
        self,
        policy: str = "lru",
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        min_free_ram: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown cache policy {policy!r}: choose one of {', '.join(POLICIES)}")
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("cache bounds must not be negative")
        self.policy = policy
        self.max_entries = max_entries if policy == "lru" else None
        self.max_bytes = max_bytes
        total = _total_ram()
        self.min_free_ram = min_free_ram if min_free_ram is not None else (total // 10 if total else 0)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        """Keep ``entry`` unless the policy keeps nothing or the entry alone exceeds the byte bound."""
        if self.policy == "none" or entry.nbytes > self.max_bytes or self.max_entries == 0:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._entries[key] = entry
        self.bytes += entry.nbytes
        self._evict()

    def _evict(self) -> None:
        entries = self._entries
        while entries and (
            self.bytes > self.max_bytes or (self.max_entries is not None and len(entries) > self.max_entries)
        ):
            self._pop_oldest()
        if self.policy == "ram-bounded" and self.min_free_ram:
            while len(entries) > 1 and (free := available_ram()) is not None and free < self.min_free_ram:
                self._pop_oldest()

    def _pop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self.bytes -= entry.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
