"""The direction of imports that ../shared/STYLE.md describes: the shared layer (labels,
records, days, wire, settings) imports no process module and none of the heavy libraries, so
that the daemon, the reports, a page and a central collector can all stand on it."""

import ast
from pathlib import Path

from tests.conftest import ROOT

KIOSK = ROOT / "kiosk"
# The shared layer: values and rules every process uses.
SHARED = {
    "kiosk",
    "kiosk.labels",
    "kiosk.visit",
    "kiosk.days",
    "kiosk.wire",
    "kiosk.config",
    "kiosk.logsetup",
    "kiosk.lifecycle",
    "kiosk.limits",
}
HEAVY = {"cv2", "numpy", "ai_edge_litert", "tflite_runtime", "paho", "sqlalchemy", "psycopg"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (a lazy import inside a function counts)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in KIOSK.rglob("*.py")}


def test_the_shared_layer_exists():
    assert SHARED <= set(modules()), SHARED - set(modules())


def test_shared_modules_import_no_process_module_or_heavy_library():
    known = modules()
    for name in SHARED:
        for imported in imports(known[name]):
            top = imported.split(".")[0]
            assert top not in HEAVY, f"{name} imports {imported}"
            if top == "kiosk" and imported in known:
                assert imported in SHARED, f"{name} (shared) imports {imported}"


def test_layout_rule_catches_a_violation(tmp_path):
    """The walk sees an import hidden inside a function."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from kiosk.store import Store\n    import cv2\n")
    assert {"kiosk.store", "kiosk.store.Store", "cv2"} <= imports(bad)


def test_the_daemon_does_not_import_the_report_cli():
    known = modules()
    for name in ("kiosk.service", "kiosk.retention", "kiosk.mqtt", "kiosk.recorder"):
        assert not {i for i in imports(known[name]) if i.startswith("kiosk.report")}, name


def test_one_mqtt_client_factory():
    """Only kiosk/mqttclient.py builds a paho client; everything else asks it for one."""
    builders = [
        module_name(path)
        for path in KIOSK.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Client"
    ]
    assert builders == ["kiosk.mqttclient"]


def test_config_sections_are_typed():
    """A parameter that carries config (cfg, config, section, *_cfg) names its section's type."""
    loose = []
    for path in KIOSK.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for arg in node.args.args + node.args.kwonlyargs:
                carries = arg.arg in ("cfg", "config", "section") or arg.arg.endswith("_cfg")
                hint = ast.unparse(arg.annotation) if arg.annotation else "Any"
                if carries and (hint == "Any" or "Config" not in hint):
                    loose.append(f"{module_name(path)}.{node.name}({arg.arg}: {hint})")
    assert loose == []


def test_the_web_page_and_the_collector_do_not_import_each_other():
    """Two process packages of their own: a Pi without the central extra runs the page, the
    head office's collector runs without Flask."""
    known = modules()
    apart = {"kiosk.web": ("kiosk.central", "kiosk.centraldb"), "kiosk.central": ("kiosk.web",)}
    for package, others in apart.items():
        for name in (n for n in known if n == package or n.startswith(package + ".")):
            reached = [i for i in imports(known[name]) if i.startswith(others)]
            assert reached == [], f"{name} imports {reached}"
