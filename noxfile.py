"""nox sessions for the medzoo monorepo.

    nox -s tests              one venv with medzoo-core and every package; pytest over tests/, shared/,
                              packages/
    nox -s lint               ruff check and ruff format --check
    nox -s deps               deptry: every distribution imports only what it declares
    nox -s build              wheels for every distribution into dist/
    nox -s "isolated(package='hyspark')"
                              a fresh venv with only the medzoo-core and that package's wheels
                              (`pip install <pkg>` alone), its `--help` and its fastest demo step;
                              `nox -s isolated` runs it for every package
    nox -s demo               every package's demo, on generated data
    nox -s benchmarks         benchmarks/*.py at full size (`-- --quick`: small sizes); writes
                              benchmarks/results/ and its SUMMARY

Every session that installs torch uses constraints.txt, which pins the one torch/torchvision pair that
imports together on the CI machine. The package lists are not kept here: each package declares its demo
commands in its own pyproject.toml (`[tool.medzoo] demo`), and every folder under packages/ with a
pyproject.toml is a package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
CORE = ROOT / "shared"
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
PACKAGE_NAMES = [p.name for p in PACKAGES]
DIST = ROOT / "dist"

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = False


def _pyproject(package: Path) -> dict:
    return nox.project.load_toml(package / "pyproject.toml")


def demo_commands(package: Path) -> list[list[str]]:
    """The demo commands a package declares in `[tool.medzoo] demo` (`{cache}` = the demo cache folder)."""
    return _pyproject(package).get("tool", {}).get("medzoo", {}).get("demo", [])


def _has_extra(package: Path, extra: str) -> bool:
    return extra in _pyproject(package).get("project", {}).get("optional-dependencies", {})


def _editable_all() -> list[str]:
    args = ["-e", f"{CORE}[test,hf]"]
    for package in PACKAGES:
        extras = "[test]" if _has_extra(package, "test") else ""
        args += ["-e", f"{package}{extras}"]
    return args


@nox.session
def tests(session: nox.Session) -> None:
    """pytest over tests/, shared/ and packages/ in one process (imports are slow; one process pays once)."""
    # deptry too: CI runs the dependency check and the benchmarks in this one venv (see .ci/run).
    session.install(*CONSTRAINTS, "deptry", *_editable_all())
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def deps(session: nox.Session) -> None:
    """Each distribution imports only what its own pyproject.toml declares."""
    session.install(*CONSTRAINTS, "deptry", *_editable_all())
    for project in [CORE, *PACKAGES]:
        with session.chdir(project):
            session.run("deptry", "src")


def _build_wheels(session: nox.Session, projects: list[Path], outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    session.install("build")
    for project in projects:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(outdir), str(project))


@nox.session
def build(session: nox.Session) -> None:
    """Wheels for medzoo-core and every package into dist/."""
    shutil.rmtree(DIST, ignore_errors=True)
    _build_wheels(session, [CORE, *PACKAGES], DIST)


def _no_extra_check(name: str) -> str:
    # hyspark's spconv is its `cuda` extra only: a plain install must not pull it in.
    module = name.replace("-", "_")
    return (
        f"import importlib.util, {module}; "
        "assert importlib.util.find_spec('spconv') is None, 'spconv must stay an extra'; "
        f"print('{name}', {module}.__version__, 'imports without extras')"
    )


@nox.session
@nox.parametrize("package", PACKAGE_NAMES)
def isolated(session: nox.Session, package: str) -> None:
    """The user's `pip install <package>`: only the medzoo-core and that package's wheels, plus what they
    declare; then `<package> --help` and its fastest demo step (the first demo command, fast_dev_run)."""
    path = ROOT / "packages" / package
    wheels = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    _build_wheels(session, [CORE, path], wheels)
    session.install(*CONSTRAINTS, "--find-links", str(wheels), package)
    session.run("python", "-m", "pip", "check")
    session.run("python", "-c", _no_extra_check(package))
    scratch = Path(session.create_tmp()).resolve()
    with session.chdir(scratch):
        session.run(package, "--help", silent=True)
        first = [arg.format(cache=scratch / "cache") for arg in demo_commands(path)[0]]
        session.run(*first, "--trainer.fast_dev_run", "true", env={"MEDZOO_CACHE": str(scratch / "cache")})


@nox.session
def demo(session: nox.Session) -> None:
    """Every package's demo on generated data, in a scratch folder per package."""
    session.install(*CONSTRAINTS, *_editable_all())
    workdir = Path(session.create_tmp()).resolve() / "demo"
    cache = workdir / "cache"
    for package in PACKAGES:
        (workdir / package.name).mkdir(parents=True, exist_ok=True)
        for command in demo_commands(package):
            with session.chdir(workdir / package.name):
                session.run(*[arg.format(cache=cache) for arg in command], env={"MEDZOO_CACHE": str(cache)})


@nox.session
def benchmarks(session: nox.Session) -> None:
    """benchmarks/*.py (`-- --quick`: small sizes, minutes in all); then results/SUMMARY[.quick].md."""
    session.install(*CONSTRAINTS, *_editable_all())
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        if not script.name.startswith("_"):
            session.run("python", str(script), *session.posargs)
    session.run("python", str(ROOT / "benchmarks" / "_summary.py"), *session.posargs)
