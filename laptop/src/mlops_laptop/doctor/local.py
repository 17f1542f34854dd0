"""Local checks: what `mlops run` and `mlops serve` need on this machine."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops_laptop.bundle.loader import BundleError
from mlops_laptop.bundle.validate import SCHEMA_ENV, find_schema, validate_bundle
from mlops_laptop.doctor import CheckResult, fail, ok, warn
from mlops_laptop.platform.local import JAVA_INSTALL_HINT, find_java, lock_holder
from mlops_laptop.serving.server import DEFAULT_PORT, LOOPBACK

MIN_JAVA = 17


@dataclass(frozen=True)
class LocalContext:
    """The bundle, the target and its local state directory (`LocalPlatform(target).state_dir`)."""

    root: Path
    target: str
    state_dir: Path
    port: int = DEFAULT_PORT


def local_checks(context: LocalContext) -> list[CheckResult]:
    checks: list[Callable[[LocalContext], CheckResult]] = [
        check_java,
        check_state_dir,
        check_lock,
        check_port,
        check_bundle_schema,
        check_registry_store,
        check_bundle_valid,
    ]
    return [check(context) for check in checks]


def check_java(context: LocalContext) -> CheckResult:
    """Local Spark needs Java 17+: $JAVA_HOME/bin/java, else `java` on PATH (as LocalPlatform)."""
    java = find_java()
    if java is None:
        return fail("java", "no Java found (local Spark needs Java 17+)", JAVA_INSTALL_HINT)
    answer = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "([^"]+)"', answer.stderr + answer.stdout)
    if match is None:
        return fail("java", f"{java} -version printed no version", JAVA_INSTALL_HINT)
    version = match.group(1)
    major = int(re.match(r"(?:1\.)?(\d*)", version).group(1) or 0)  # "1.8.0_292" is Java 8
    if major < MIN_JAVA:
        return fail("java", f"Java {version} at {java}; local Spark needs {MIN_JAVA}+", JAVA_INSTALL_HINT)
    return ok("java", f"Java {version} ({java})")


def check_state_dir(context: LocalContext) -> CheckResult:
    """The state directory, or the nearest existing folder it would be created in, is writable."""
    existing = next(folder for folder in (context.state_dir, *context.state_dir.parents) if folder.exists())
    fix = f"make {existing} writable (chmod u+w {existing}), or set MLOPS_HOME to a writable folder"
    if not existing.is_dir():
        return fail(
            "state directory", f"{existing} is not a directory", f"remove {existing} or set MLOPS_HOME"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        return fail("state directory", f"{existing} is not writable", fix)
    created = "" if existing == context.state_dir else f" (created on first run under {existing})"
    return ok("state directory", f"{context.state_dir} writable{created}")


def check_lock(context: LocalContext) -> CheckResult:
    """The state lock (`LocalPlatform._acquire_lock`) is free, or held by this very process."""
    holder = lock_holder(context.state_dir)
    if holder is None:
        return ok("state lock", "free")
    pid = re.match(r"process (\d+)", holder)
    if pid and int(pid.group(1)) == os.getpid():
        return ok("state lock", "held by this process")
    stop = f"kill {pid.group(1)}" if pid else "stop it"
    return fail(
        "state lock",
        f"{context.state_dir} is in use by {holder}",
        f"wait for it to finish, or {stop}",
    )


def check_port(context: LocalContext) -> CheckResult:
    """`mlops serve` listens on 127.0.0.1:PORT; warn when something else already does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is free
        try:
            sock.bind((LOOPBACK, context.port))
        except OSError as error:
            return warn(
                "serving port",
                f"{LOOPBACK}:{context.port} is in use ({error.strerror})",
                f"stop what listens there (lsof -i :{context.port}), or "
                f"`mlops serve -t {context.target} --port {context.port + 1}`",
            )
    return ok("serving port", f"{LOOPBACK}:{context.port} free")


def check_bundle_schema(context: LocalContext) -> CheckResult:
    """The CLI's bundle JSON schema that `mlops bundle validate` checks against is present."""
    try:
        return ok("bundle schema", str(find_schema()))
    except BundleError as error:
        fix = (
            f"unset {SCHEMA_ENV}" if os.environ.get(SCHEMA_ENV) else "git checkout the file, or `make schema`"
        )
        return fail("bundle schema", str(error), fix)


def check_registry_store(context: LocalContext) -> CheckResult:
    """MLflow resolves the `local-uc` registry scheme (entry point `mlflow.model_registry_store`)."""
    from mlflow.tracking._model_registry.utils import _get_store_registry
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

    from mlops_laptop.platform.uc_registry import registry_uri

    uri = registry_uri(f"sqlite:///{context.state_dir / 'mlflow.db'}")
    try:
        store = _get_store_registry().get_store_builder(uri)
    except UnsupportedModelRegistryStoreURIException:
        return fail(
            "registry store",
            f"MLflow does not resolve {uri.partition(':')[0]}: (entry point not installed)",
            "reinstall the package: make install (uv sync --extra local)",
        )
    return ok("registry store", f"{uri.partition(':')[0]}: -> {getattr(store, '__name__', store)}")


def check_bundle_valid(context: LocalContext) -> CheckResult:
    """`mlops bundle validate -t TARGET` passes."""
    try:
        bundle = validate_bundle(context.root, context.target)
    except BundleError as error:
        return fail(
            "bundle validate",
            str(error),
            f"fix the key named, then `mlops bundle validate -t {context.target}`",
        )
    jobs = len(bundle.resources.get("jobs", {}))
    return ok("bundle validate", f"{bundle.name} valid for target {bundle.target} ({jobs} jobs)")
