"""nox sessions for the medzoo monorepo.

    nox -s tests        one venv with medzoo-core and every package; pytest over shared/ and packages/
    nox -s lint         ruff check and ruff format --check
    nox -s deps         deptry: every distribution imports only what it declares
    nox -s build        wheels for every distribution into dist/
    nox -s isolated     a fresh venv with only the medzoo-core and hyspark wheels: `pip install hyspark` alone
    nox -s demo         every package's demo, on generated data
    nox -s benchmarks   benchmarks/*.py, results into benchmarks/results/

Every session that installs torch uses constraints.txt, which pins the one torch/torchvision pair
that imports together on the CI machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))
CORE = ROOT / "shared"
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
DIST = ROOT / "dist"

# Each package's demo as its README gives it: generated data (written under $MEDZOO_CACHE on first use),
# a short fit, then the package's evaluation and predict verbs. Run in a scratch folder per package.
DEMOS: dict[str, list[list[str]]] = {
    "han-landmark": [
        ["han-landmark", "fit", "--config", "demo"],
        ["han-landmark", "test", "--config", "demo", "--ckpt_path", "last"],
        [
            "han-landmark", "predict", "--config", "demo", "--ckpt_path", "last",
            "--data.predict_images", "{cache}/han-landmark/phantoms-k6-n40-256x256-seed0/images",
        ],
    ],
    "hyspark": [
        ["hyspark", "fit", "--config", "demo"],
        ["hyspark", "predict", "--config", "demo", "--ckpt_path", "runs/hyspark-demo/checkpoints/last.ckpt"],
        [
            "hyspark", "finetune", "fit", "--config", "finetune_demo",
            "--model.pretrained", "runs/hyspark-demo/checkpoints/last.ckpt",
        ],
        [
            "hyspark", "finetune", "predict", "--config", "finetune_demo",
            "--ckpt_path", "runs/hyspark-finetune-demo/checkpoints/last.ckpt",
        ],
    ],
    "carzero": [
        ["carzero", "fit", "--config", "demo"],
        [
            "carzero", "zeroshot", "--images", "{cache}/carzero/demo/images",
            "--findings", "Pneumonia,Effusion,Pneumothorax",
            "--ckpt", "runs/carzero-demo/checkpoints/last.ckpt", "--output", "scores.csv",
        ],
        [
            "carzero", "evaluate", "--dataset", "chestxray14", "--root", "{cache}/carzero/demo",
            "--ckpt", "runs/carzero-demo/checkpoints/last.ckpt",
        ],
    ],
}  # fmt: skip

# `nox -s isolated` runs this after installing the hyspark wheel alone: import it and run its
# fastest demo path (one tiny pre-training forward/backward on generated CT).
ISOLATED_SMOKE = ["hyspark", "fit", "--config", "demo", "--trainer.fast_dev_run", "true"]

NO_SPCONV_CHECK = (
    "import importlib.util, hyspark; "
    "assert importlib.util.find_spec('spconv') is None, 'spconv must stay an extra'; "
    "print('hyspark', hyspark.__version__, 'imports without spconv')"
)

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = False


def _editable_all() -> list[str]:
    args = ["-e", f"{CORE}[test]"]
    for package in PACKAGES:
        extras = "[test]" if _has_extra(package, "test") else ""
        args += ["-e", f"{package}{extras}"]
    return args


def _has_extra(package: Path, extra: str) -> bool:
    data = nox.project.load_toml(package / "pyproject.toml")
    return extra in data.get("project", {}).get("optional-dependencies", {})


@nox.session
def tests(session: nox.Session) -> None:
    """pytest over shared/ and packages/ in one process (imports are slow; one process pays once)."""
    session.install(*CONSTRAINTS, *_editable_all())
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
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


@nox.session
def isolated(session: nox.Session) -> None:
    """The user's `pip install hyspark`: only the medzoo-core and hyspark wheels, plus what they declare."""
    wheels = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    _build_wheels(session, [CORE, ROOT / "packages" / "hyspark"], wheels)
    session.install(*CONSTRAINTS, "--find-links", str(wheels), "hyspark")
    session.run("python", "-m", "pip", "check")
    # spconv is the `cuda` extra only: a plain install must not pull it in.
    session.run("python", "-c", NO_SPCONV_CHECK)
    scratch = Path(session.create_tmp()).resolve()
    with session.chdir(scratch):
        session.run(*ISOLATED_SMOKE, env={"MEDZOO_CACHE": str(scratch / "cache")})


@nox.session
def demo(session: nox.Session) -> None:
    """Every package's demo on generated data, in a scratch folder."""
    session.install(*CONSTRAINTS, *_editable_all())
    workdir = Path(session.create_tmp()).resolve() / "demo"
    cache = workdir / "cache"
    for package in PACKAGES:
        (workdir / package.name).mkdir(parents=True, exist_ok=True)
        for command in DEMOS.get(package.name, []):
            with session.chdir(workdir / package.name):
                args = [arg.format(cache=cache) for arg in command]
                session.run(*args, env={"MEDZOO_CACHE": str(cache)})


@nox.session
def benchmarks(session: nox.Session) -> None:
    """benchmarks/*.py; each prints its table and writes JSON into benchmarks/results/."""
    session.install(*CONSTRAINTS, *_editable_all())
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        session.run("python", str(script), *session.posargs)
