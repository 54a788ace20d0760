"""The package's layering, read from its import graph (every `import`, also inside functions).

Layers, bottom up: records and helpers (atomic, lock, manifest, progress, storage, config, corpus.names) -> media ->
corpus -> stages (index, sync, faces, features, clip_audio, shards, splits, select, curation) -> take worker and runner -> prepare ->
data, baseline, report, demo -> commands -> cli. A rule names a module prefix and what it must not import.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "meadkit"
STAGES = ("meadkit.index", "meadkit.sync", "meadkit.faces", "meadkit.features", "meadkit.clip_audio", "meadkit.shards",
          "meadkit.splits", "meadkit.select", "meadkit.curation")
TOP = ("meadkit.commands", "meadkit.cli", "meadkit.runner", "meadkit.prepare", "meadkit.take", "meadkit.demo",
       "meadkit.report", "meadkit.baseline", "meadkit.data", "meadkit.inputs", "meadkit.export", "meadkit.wds_frames")
RULES = [
    (STAGES, TOP, "stages never import orchestration, commands or consumers"),
    (("meadkit.baseline",), STAGES[:4] + ("meadkit.corpus.synth", "meadkit.corpus.archive", "meadkit.prepare",
                                          "meadkit.take", "meadkit.media.audio"),
     "baseline reads shards and calls meadkit.inputs for generate, not the stages"),
    (("meadkit.data",), ("meadkit.media", "meadkit.faces", "meadkit.index"), "data.py reads arrays only"),
    (("meadkit.media",), ("meadkit.corpus",) + STAGES + TOP, "media knows nothing of MEAD"),
    (("meadkit.records", "meadkit.manifest", "meadkit.atomic", "meadkit.lock", "meadkit.progress", "meadkit.storage"),
     ("meadkit.media", "meadkit.corpus.synth", "meadkit.corpus.archive") + STAGES + TOP, "records and helpers are the bottom"),
    (("meadkit.corpus",), STAGES + TOP, "corpus knowledge sits below the stages"),
    (("meadkit.runner",), STAGES + TOP[:2] + TOP[3:], "the runner runs callables; it knows no stage"),
    (("meadkit.report",), ("meadkit.prepare", "meadkit.take", "meadkit.runner", "meadkit.commands", "meadkit.cli"),
     "the report reads manifests"),
    (("meadkit",), ("meadkit.testing",), "test helpers are for tests and benchmarks only"),
    (("meadkit",), ("meadkit.cli",), "only commands (and __main__) reach the CLI"),
]
#: (module, import) pairs a rule above would refuse: the synthetic corpus draws faces in the 68-point scheme.
ALLOWED = {("meadkit.__main__", "meadkit.cli"), ("meadkit.commands", "meadkit.cli"), ("meadkit.corpus.synth_face", "meadkit.faces.align")}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every meadkit module `path` imports at run time (relative imports resolved; `from a import b` counts a
    and a.b; imports under `if TYPE_CHECKING:` are annotations only and do not count)."""
    found, mod = set(), _module(path)
    tree = ast.parse(path.read_text())
    hints = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
             for stmt in block.body for n in ast.walk(stmt)}
    for node in (n for n in ast.walk(tree) if id(n) not in hints):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".")[: len(mod.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(pkg + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "meadkit" or m.startswith("meadkit.")}


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


GRAPH = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("sources, banned, why", RULES, ids=[r[2] for r in RULES])
def test_layering(sources, banned, why):
    broken = sorted(f"{m} -> {i}" for m, imported in GRAPH.items() if _within(m, sources) and not _within(m, ("meadkit.testing",))
                    for i in imported if _within(i, banned) and not _within(i, (m,)) and not _allowed(m, i))
    assert not broken, f"{why}: " + ", ".join(broken)


def _allowed(module: str, imported: str) -> bool:
    return any(_within(module, (a,)) and _within(imported, (b,)) for a, b in ALLOWED)


def test_the_graph_is_read():
    assert "meadkit.index" in GRAPH["meadkit.prepare"] and "meadkit.cli" in GRAPH["meadkit.__main__"]
