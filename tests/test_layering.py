"""The package's import layers: no cycles among the schedulers, ``networks`` below ``inferers``, the forward-process
module at the bottom, and the exact references (``monai_diffusion.exact``) used by tests, benchmarks and docs only."""

from __future__ import annotations

import ast
import subprocess
import sys
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monai_diffusion"
EXACT = "monai_diffusion.exact"
#: the old homes of the exact references, kept so that existing imports work; they only re-export
COMPATIBILITY_SHIMS = {
    "monai_diffusion.utils.exact",
    "monai_diffusion.inferers.exact_guidance",
    "monai_diffusion.apps.reconstruction.gaussian_prior",
}
#: modules whose content is an exact reference, or a re-export of one
REFERENCES = COMPATIBILITY_SHIMS | {EXACT}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (relative imports resolved; ``from a import b`` gives
    both ``a`` and ``a.b``, since ``b`` may be a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def is_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


SOURCES = sorted(PACKAGE.rglob("*.py"))
SCHEDULER_MODULES = sorted(
    module_name(p) for p in (PACKAGE / "networks" / "schedulers").glob("*.py") if p.name != "__init__.py"
)


class TestLayers(unittest.TestCase):
    def test_production_code_does_not_use_the_exact_references(self):
        offenders = []
        for path in SOURCES:
            name = module_name(path)
            if any(is_under(name, ref) for ref in REFERENCES):
                continue
            if name == "monai_diffusion.apps.reconstruction":  # its lazy re-export of the moved names, on access
                continue
            bad = sorted(m for m in imported_modules(path) if any(is_under(m, ref) for ref in REFERENCES))
            if bad:
                offenders.append(f"{name}: {bad}")
        self.assertEqual(offenders, [])

    def test_networks_do_not_import_upwards(self):
        upper = ("inferers", "engines", "apps", "bundle", "data", "metrics", "losses", "exact", "utils.exact")
        offenders = []
        for path in (PACKAGE / "networks").rglob("*.py"):
            bad = sorted(m for m in imported_modules(path) if any(is_under(m, f"monai_diffusion.{u}") for u in upper))
            if bad:
                offenders.append(f"{module_name(path)}: {bad}")
        self.assertEqual(offenders, [])

    def test_the_forward_process_module_is_the_bottom_layer(self):
        imports = imported_modules(PACKAGE / "networks" / "schedulers" / "process.py")
        self.assertEqual(sorted(m for m in imports if is_under(m, "monai_diffusion")), [])

    def test_scheduler_modules_form_no_cycle(self):
        graph = {
            m: {i for i in imported_modules(ROOT / (m.replace(".", "/") + ".py")) if i in SCHEDULER_MODULES}
            for m in SCHEDULER_MODULES
        }
        for start in graph:
            stack, seen = list(graph[start]), set()
            while stack:
                node = stack.pop()
                self.assertNotEqual(node, start, f"import cycle through {start}")
                if node not in seen:
                    seen.add(node)
                    stack.extend(graph[node])

    def test_each_scheduler_module_imports_first(self):
        """Every scheduler module imported first, in a fresh interpreter, with no exact reference loaded.

        One subprocess (``torch`` and ``monai`` imported once) forgets every ``monai_diffusion`` module before each
        import: that is a fresh start for the package (its ``__init__`` runs first either way) at a twelfth of the
        cost of one interpreter per module.
        """
        code = (
            "import importlib, sys, torch, monai\n"
            f"for name in {SCHEDULER_MODULES!r}:\n"
            "    for m in [m for m in sys.modules if m.split('.')[0] == 'monai_diffusion']:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n"
            f"    assert not [m for m in sys.modules if m.startswith('{EXACT}')], name\n"
            "print('ok', len(sys.modules) > 0)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        self.assertEqual(out.stdout.strip(), "ok True")

    def test_importing_the_production_packages_loads_no_exact_reference(self):
        packages = [
            "monai_diffusion.networks.schedulers",
            "monai_diffusion.inferers",
            "monai_diffusion.engines",
            "monai_diffusion.losses",
            "monai_diffusion.operators",
            "monai_diffusion.transforms",
            "monai_diffusion.apps.reconstruction",
        ]
        code = "; ".join(f"import {p}" for p in packages)
        code += f"; import sys; print(sorted(m for m in sys.modules if m.startswith('{EXACT}')))"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        self.assertEqual(out.stdout.strip(), "[]")

    def test_old_homes_still_export_the_moved_names(self):
        from monai_diffusion import exact
        from monai_diffusion.apps import reconstruction
        from monai_diffusion.inferers import exact_guidance
        from monai_diffusion.networks.schedulers.process import marginal_coefficients
        from monai_diffusion.utils import exact as utils_exact

        self.assertIs(utils_exact.ExactModel, exact.ExactModel)
        self.assertIs(exact_guidance.TemperedLabelClassifier, exact.TemperedLabelClassifier)
        self.assertIs(reconstruction.GaussianPriorDenoiser, exact.GaussianPriorDenoiser)
        self.assertIs(reconstruction.StationaryGaussianPrior, exact.StationaryGaussianPrior)
        self.assertIs(reconstruction.scheduler_coefficients, marginal_coefficients)
        with self.assertRaises(AttributeError):
            reconstruction.no_such_name  # noqa: B018


if __name__ == "__main__":
    unittest.main()
