"""`mlops rename`: give the project, its Python package and its bundle the team's names.

Renaming by hand means a search-and-replace over code, resources, notebooks, tests and docs, a
directory move and a relock; this does exactly that, in a checkout, and refuses names that pip,
Python or the bundle would not accept. The laptop package (`mlops-laptop`) keeps its name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CURRENT_PROJECT = "mlops-template"
CURRENT_PACKAGE = "mlops_template"
CURRENT_BUNDLE = "mlops_template"

_PROJECT = re.compile(r"^[a-z0-9]+(?:[-_.][a-z0-9]+)*$")  # PEP 508 names, lower-case
_PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*$")
_BUNDLE = re.compile(r"^[A-Za-z0-9_-]+$")
_BUNDLE_NAME_LINE = re.compile(rf"^(bundle:\n(?:[ \t]+.*\n)*?[ \t]+name:[ \t]*){CURRENT_BUNDLE}[ \t]*$", re.M)
# Generated or binary content that a text replacement must not touch.
_SKIPPED_PARTS = {".git", ".venv", ".tools", ".mlops", "dist", "build", "__pycache__", "mlruns"}
# uv rewrites its lock file itself (names are encoded in it, e.g. with their length).
LOCK_FILE = "uv.lock"


class RenameError(ValueError):
    """A name is invalid, or the checkout is not the template's."""


@dataclass(frozen=True)
class Names:
    project: str
    package: str
    bundle: str

    def check(self) -> None:
        """Refuse names the tools would refuse, saying which rule each breaks."""
        problems = []
        if not _PROJECT.match(self.project):
            problems.append(f"project {self.project!r}: lower-case letters, digits and '-', '_', '.' between")
        if not _PACKAGE.match(self.package) or self.package == CURRENT_PACKAGE:
            problems.append(f"package {self.package!r}: a new lower-case Python identifier")
        if not _BUNDLE.match(self.bundle):
            problems.append(f"bundle {self.bundle!r}: letters, digits, '-' and '_'")
        if problems:
            raise RenameError("invalid names: " + "; ".join(problems))


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


def rewrite(text: str, names: Names) -> str:
    """`text` with the bundle name line, then the package and the project names replaced."""
    text = _BUNDLE_NAME_LINE.sub(rf"\g<1>{names.bundle}", text)
    return text.replace(CURRENT_PACKAGE, names.package).replace(CURRENT_PROJECT, names.project)


def rename(root: Path, names: Names, *, relock: bool = True) -> list[Path]:
    """Rename in the checkout at `root`; returns the files changed. The package directory moves."""
    names.check()
    package_dir = root / "src" / CURRENT_PACKAGE
    if not (root / "databricks.yml").is_file() or not package_dir.is_dir():
        raise RenameError(
            f"{root} is not a checkout of the template (no databricks.yml or src/{CURRENT_PACKAGE}); "
            "run `mlops rename` from the project root, once"
        )
    changed = []
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        renamed = rewrite(text, names)
        if renamed != text:
            path.write_text(renamed, encoding="utf-8")
            changed.append(path.relative_to(root))
    package_dir.rename(root / "src" / names.package)
    if relock:
        _relock(root)
    return changed


def _relock(root: Path) -> None:
    uv = shutil.which("uv") or str(root / ".tools" / "bin" / "uv")
    subprocess.run([uv, "lock"], cwd=root, check=True)
