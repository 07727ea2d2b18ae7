"""No import cycle in tools/: each module's imports, read with ast (at the top and inside
functions alike: a deferred import is still an arrow), form a graph with no cycle. A cycle
means two modules that are one job split badly, or one module doing two."""
import ast
import os

from tools.paths import ROOT


def modules(root, package="tools"):
    """{dotted name: path} for every .py file under root/package (a package is its
    __init__)."""
    out = {}
    for folder, _, files in os.walk(os.path.join(root, package)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def imports(path, known):
    """The modules of `known` that the file at path imports, with the packages each import
    runs on the way (importing a.b.c runs a and a.b first)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update("%s.%s" % (node.module, a.name) for a in node.names)
    out = set()
    for name in found:
        parts = name.split(".")
        out.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return out & set(known)


def graph(root, package="tools"):
    known = modules(root, package)
    return {name: imports(path, known) - {name} for name, path in known.items()}


def cycle(edges):
    """One import cycle as [a, b, ..., a], or None."""
    state = {}  # name -> "open" while on the path, "done" after

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(edges[name]):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[name] = "done"
        return None

    for name in sorted(edges):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def test_tools_have_no_import_cycle():
    edges = graph(ROOT)
    assert len(edges) > 50 and edges["tools.evctl"] >= {"tools.client"}  # it reads the tree
    found = cycle(edges)
    assert found is None, "import cycle in tools/: " + " -> ".join(found)


def test_the_check_finds_a_cycle(tmp_path):
    # Two launchers that import each other, one of them only inside a function (as
    # tools/bench/sim.py and site_bench.py once did), and a third module beside them.
    pkg = tmp_path / "tools" / "bench"
    pkg.mkdir(parents=True)
    for init in (tmp_path / "tools" / "__init__.py", pkg / "__init__.py"):
        init.write_text("")
    (pkg / "sim.py").write_text("def main():\n    from tools.bench import site_bench\n")
    (pkg / "site_bench.py").write_text("from tools.bench.sim import main\nimport json\n")
    (pkg / "rig.py").write_text("import tools.bench.sim\n")
    edges = graph(str(tmp_path))
    assert edges["tools.bench.rig"] == {"tools", "tools.bench", "tools.bench.sim"}
    assert cycle(edges) == ["tools.bench.sim", "tools.bench.site_bench", "tools.bench.sim"]
    (pkg / "sim.py").write_text("def main():\n    pass\n")
    assert cycle(graph(str(tmp_path))) is None
