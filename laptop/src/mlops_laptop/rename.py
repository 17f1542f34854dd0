"""`mlops rename`: give the project, its Python package and its bundle the team's names.

Renaming by hand means a search-and-replace over code, resources, notebooks, tests and docs, a
directory move and a relock; this does exactly that, in a checkout, and refuses names that pip,
Python or the bundle would not accept. The laptop package (`mlops-laptop`) keeps its name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

_PROJECT = re.compile(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$")  # PEP 508 names, lower-case
_PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
_BUNDLE = re.compile(r"^[A-Za-z0-9_-]+$")
# Generated or binary content that a text replacement must not touch.
_SKIPPED_PARTS = {".git", ".venv", ".tools", ".mlops", "dist", "build", "__pycache__", "mlruns"}
# uv rewrites its lock file itself (names are encoded in it, e.g. with their length).
LOCK_FILE = "uv.lock"


class RenameError(ValueError):
    """A name is invalid or already taken, or the checkout is not a project of the template."""


@dataclass(frozen=True)
class Names:
    project: str
    package: str
    bundle: str

    def check(self, current: Names) -> None:
        """Refuse names the tools would refuse, or that one replacement could not tell apart."""
        problems = []
        if not _PROJECT.match(self.project):
            problems.append(f"project {self.project!r}: lower-case letters, digits and '-', '_', '.' between")
        if not _PACKAGE.match(self.package):
            problems.append(f"package {self.package!r}: a lower-case Python identifier")
        if not _BUNDLE.match(self.bundle):
            problems.append(f"bundle {self.bundle!r}: letters, digits, '-' and '_'")
        if len({self.project, self.package, self.bundle}) < 3:
            problems.append("project, package and bundle need three different names")
        if taken := sorted({self.project, self.package, self.bundle} & set(current.words())):
            problems.append(f"{taken} already name something in this checkout")
        if problems:
            raise RenameError("invalid names: " + "; ".join(problems))

    def words(self) -> tuple[str, str, str]:
        return (self.project, self.package, self.bundle)


def current_names(root: Path) -> Names:
    """The names the checkout at `root` uses now: pyproject's project and wheel package, the bundle's."""
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text())
        (package_dir,) = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
        bundle = yaml.safe_load((root / "databricks.yml").read_text())["bundle"]["name"]
        return Names(project["project"]["name"], Path(package_dir).name, bundle)
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise RenameError(
            f"{root} is not a project of the template ({error!r} reading pyproject.toml and "
            "databricks.yml): run `mlops rename` from the project's root"
        ) from None


def text_files(root: Path) -> list[Path]:
    """The checkout's files that hold text, without generated directories and the lock file."""
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or _SKIPPED_PARTS.intersection(relative.parts) or relative.name == LOCK_FILE:
            continue
        try:
            path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        files.append(path)
    return files


def word_pattern(name: str) -> re.Pattern[str]:
    """`name` as a whole word of identifiers and names (not inside a longer one)."""
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")


def rewrite(text: str, current: Names, names: Names) -> str:
    """`text` with each current name (a whole word) replaced by its new one."""
    for old, new in zip(current.words(), names.words(), strict=True):
        text = word_pattern(old).sub(new, text)
    return text


def rename(root: Path, names: Names, *, relock: bool = True) -> list[Path]:
    """Rename in the checkout at `root`; returns the files changed. The package directory moves."""
    current = current_names(root)
    names.check(current)
    package_dir = root / "src" / current.package
    if not package_dir.is_dir():
        raise RenameError(f"{package_dir} is missing: the wheel's package must be under src/")
    changed = []
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        renamed = rewrite(text, current, names)
        if renamed != text:
            path.write_text(renamed, encoding="utf-8")
            changed.append(path.relative_to(root))
    package_dir.rename(root / "src" / names.package)
    _sort_imports(root)
    if relock:
        _relock(root)
    return changed


def _sort_imports(root: Path) -> None:
    """Re-sort import blocks: a renamed first-party package sorts elsewhere (ruff, as `make lint`)."""
    paths = [name for name in ("src", "laptop", "tests", "notebooks", "benchmarks") if (root / name).is_dir()]
    subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "I", "--fix", "--quiet", *paths],
        cwd=root,
        check=False,
    )


def _relock(root: Path) -> None:
    uv = shutil.which("uv") or str(root / ".tools" / "bin" / "uv")
    subprocess.run([uv, "lock"], cwd=root, check=True)
