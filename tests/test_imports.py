"""The package's import graph: no cycles (lazy imports included), and the inference path
(model, aligner) loads nothing of training or the data pipeline."""
import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = "insightface_align"
# What `import insightface_align.aligner / .model` must not load: the trainer, the data
# pipeline, datasets, exports and the face renderer (data.flip, the landmark scheme, is fine).
NOT_FOR_INFERENCE = ("train", "evaluate", "losses", "recipe", "benchmarks", "export", "int8_cab", "pack", "plots",
                     "data.iterator", "data.batch", "data.workers", "data.augment", "data.recfile", "data.config",
                     "data.targets", "data.photometric", "datasets", "synthetic", "cli")


def _modules() -> dict:
    """module name -> source path of every module of the package."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path, modules: dict) -> set:
    """The package's modules `name` imports anywhere in its source (functions included)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (name if is_package else name.rpartition(".")[0]).split(".")
                base = ".".join(base[:len(base) - node.level + 1])
                module = base + ("." + node.module if node.module else "")
            else:
                module = node.module or ""
            targets = [module + "." + a.name if module + "." + a.name in modules else module for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_package_and_its_lazy_imports():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert len(modules) > 80 and "insightface_align.symbols.ext" in modules
    assert "insightface_align.graph" in graph["insightface_align.int8_cab"]
    assert "insightface_align.aligner" in graph[PACKAGE]  # __getattr__'s lazy import counts
    assert "insightface_align.symbols.ext" in graph["insightface_align.symbols.backend"]  # `from . import ext`
    # A cycle made of a function-level import is found too.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_inference_path_imports_nothing_of_training_or_the_data_pipeline():
    script = f"""
import sys
import insightface_align.aligner, insightface_align.model
bad = sorted(m for m in sys.modules if any(m == f"{PACKAGE}." + n or m.startswith(f"{PACKAGE}." + n + ".")
                                             for n in {NOT_FOR_INFERENCE!r}))
print(" ".join(bad))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == []
