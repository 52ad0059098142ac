"""The package contract (CONTRIBUTING.md), checked for every folder under packages/.

Like timm's tests over its model registry, every check is parametrized over the packages found on disk, so
a new package is checked from its first commit. The static checks are plain functions that return the list
of problems; ``test_a_broken_copy_fails`` shows that each of them catches a copy of a real package with one
convention broken.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shutil
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
README_SECTIONS = (
    "install",
    "quickstart",
    "real data",
    "configs",
    "results",
    "choices and deviations",
    "citation",
)
DATA_ARGS = ("root", "batch_size", "num_workers", "seed", "predict_root", "cache_dir")


def import_name(package: Path) -> str:
    return package.name.replace("-", "_")


# ------------------------------------------------------------------------------------------------------------
# Static checks: each returns a list of problems (empty = the package follows the contract)
# ------------------------------------------------------------------------------------------------------------


def check_anatomy(package: Path) -> list[str]:
    src = package / "src" / import_name(package)
    needed = [
        package / "pyproject.toml",
        package / "README.md",
        package / "CHANGELOG.md",
        package / "tests",
        src / "__init__.py",
        src / "models" / "__init__.py",
        src / "data.py",
        src / "module.py",
        src / "cli.py",
        src / "configs" / "paper.yaml",
        src / "configs" / "demo.yaml",
    ]
    return [f"missing {path.relative_to(package)}" for path in needed if not path.exists()]


def _top_changelog_version(package: Path) -> str | None:
    for line in (package / "CHANGELOG.md").read_text().splitlines():
        match = re.match(r"^##\s+\[?v?(\d+\.\d+\.\d+[^\]\s]*)", line)
        if match:
            return match.group(1)
    return None


def check_pyproject(package: Path) -> list[str]:
    problems = []
    data = tomllib.loads((package / "pyproject.toml").read_text())
    project = data.get("project", {})
    name, module = package.name, import_name(package)
    if project.get("name") != name:
        problems.append(f"project.name is {project.get('name')!r}, expected {name!r}")
    version = project.get("version")
    if version != _top_changelog_version(package):
        problems.append(
            f"version {version} differs from the top CHANGELOG entry {_top_changelog_version(package)}"
        )
    deps = " ".join(project.get("dependencies", []))
    core = re.search(r"medzoo-core(\[[^\]]*\])?>=0\.(\d+)[^,\s]*,<1\b", deps)
    if core is None or int(core.group(2)) < 2:
        problems.append("dependencies lack medzoo-core>=0.N,<1 (N >= 2: the contract's core)")
    if project.get("scripts", {}).get(name) != f"{module}.cli:main":
        problems.append(f"[project.scripts] lacks {name} = '{module}.cli:main'")
    if "test" not in project.get("optional-dependencies", {}):
        problems.append("no `test` extra")
    demo = data.get("tool", {}).get("medzoo", {}).get("demo")
    if not demo or not all(isinstance(c, list) and all(isinstance(a, str) for a in c) for c in demo):
        problems.append("[tool.medzoo] demo is not a non-empty list of argument lists")
    else:
        # `<name> fit --config demo`, or a further stage's fit first (`carzero pretrain fit --config
        # pretrain_demo`) where the demo starts with that stage.
        first = demo[0]
        fit_at = 1 if first[1:2] == ["fit"] else 2 if first[2:3] == ["fit"] else None
        config = first[first.index("--config") + 1] if "--config" in first[:-1] else ""
        if first[:1] != [name] or fit_at is None or not (config == "demo" or config.endswith("_demo")):
            problems.append(
                f"the first demo command is {first}, "
                f"expected `{name} [<stage>] fit --config [<stage>_]demo ...`"
            )
        if not any("predict" in command[1:3] for command in demo):
            problems.append("no demo command runs predict")
    return problems


def check_readme(package: Path) -> list[str]:
    headings = [
        line.lstrip("#").strip().lower()
        for line in (package / "README.md").read_text().splitlines()
        if line.startswith("#")
    ]
    return [f"README has no '{s}' section" for s in README_SECTIONS if not any(s in h for h in headings)]


def _flow_nodes(text: str) -> int:
    return sum(
        1
        for event in yaml.parse(text)
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)) and event.flow_style
    )


def check_configs(package: Path) -> list[str]:
    problems = []
    for path in sorted((package / "src" / import_name(package) / "configs").glob("*.yaml")):
        text = path.read_text()
        if _flow_nodes(text):
            problems.append(
                f"{path.name} uses flow-style YAML ({{...}} or [...]); the contract is block style"
            )
        stem = path.stem
        if not re.fullmatch(r"(paper|demo|[a-z0-9]+_(paper|demo)|[a-z0-9_]+)", stem):
            problems.append(f"config name {stem!r} is not paper, demo, <stage>_paper|demo or <dataset>")
    return problems


def check_sources(package: Path) -> list[str]:
    problems = []
    for path in sorted((package / "src").rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(package)
        if re.search(r"^\s*from \.", text, re.M):
            problems.append(f"{rel}: relative import; the contract is absolute imports")
        if re.search(r"[\"']--ckpt[\"']", text):
            problems.append(f"{rel}: a --ckpt flag; the contract's flag is --ckpt_path")
        if re.search(r"torch\.load\((?![^)]*weights_only=True)", text):
            problems.append(f"{rel}: torch.load without weights_only=True")
    return problems


STATIC_CHECKS = (check_anatomy, check_pyproject, check_readme, check_configs, check_sources)


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
@pytest.mark.parametrize("check", STATIC_CHECKS, ids=lambda c: c.__name__)
def test_static_contract(package: Path, check) -> None:
    assert check(package) == []


# Each mutation breaks one convention in a copy of a real package; the matching check must notice.
MUTATIONS = {
    "version differs from CHANGELOG": (
        check_pyproject,
        lambda p: _sub(p / "pyproject.toml", r'^version = "[^"]+"', 'version = "9.9.9"'),
    ),
    "no predict in the demo": (
        check_pyproject,
        lambda p: _sub(
            p / "pyproject.toml", r"(?s)\[tool\.medzoo\].*", '[tool.medzoo]\ndemo = [["x", "fit"]]\n'
        ),
    ),
    "the first demo command is not the demo's fit": (
        check_pyproject,
        lambda p: _sub(
            p / "pyproject.toml",
            r'^  \["han-landmark", "fit", "--config", "demo"\],',
            '  ["han-landmark", "fit", "--config", "paper"],',
        ),
    ),
    "no Choices section": (
        check_readme,
        lambda p: _sub(p / "README.md", r"(?im)^(#+\s*)choices and deviations", r"\1Notes"),
    ),
    "flow-style YAML": (
        check_configs,
        lambda p: (p / "src" / import_name(p) / "configs" / "demo.yaml").write_text(
            "trainer: {max_epochs: 1}\n"
        ),
    ),
    "a --ckpt flag": (
        check_sources,
        lambda p: (p / "src" / import_name(p) / "extra.py").write_text('FLAG = "--ckpt"\n'),
    ),
    "a relative import": (
        check_sources,
        lambda p: (p / "src" / import_name(p) / "extra.py").write_text("from .data import x\n"),
    ),
    "no demo config": (
        check_anatomy,
        lambda p: (p / "src" / import_name(p) / "configs" / "demo.yaml").unlink(),
    ),
}


def _sub(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    new = re.sub(pattern, replacement, text, count=1, flags=re.M)
    assert new != text, f"mutation {pattern!r} did not apply to {path}"
    path.write_text(new)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_broken_copy_fails(mutation: str, tmp_path: Path) -> None:
    """A deliberately broken fixture package: a copy of han-landmark with one convention broken."""
    original = ROOT / "packages" / "han-landmark"
    copy = tmp_path / original.name
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (copy / "tests").mkdir()
    check, mutate = MUTATIONS[mutation]
    assert check(copy) == [], "the unbroken copy must pass"
    mutate(copy)
    assert check(copy), f"{check.__name__} did not notice: {mutation}"


# ------------------------------------------------------------------------------------------------------------
# Dynamic checks: the package imports, and its command line speaks the dialect
# ------------------------------------------------------------------------------------------------------------


def _run_cli(package: Path, args: list[str]) -> tuple[int, str]:
    main = importlib.import_module(f"{import_name(package)}.cli").main
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out):
        try:
            main(args)
        except SystemExit as exit_:
            code = exit_.code or 0
    return code, out.getvalue()


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_models_and_version(package: Path) -> None:
    module = importlib.import_module(import_name(package))
    models = importlib.import_module(f"{import_name(package)}.models")
    assert {"paper", "tiny"} <= set(models.MODEL_CONFIGS)
    assert callable(module.create_model)
    version = tomllib.loads((package / "pyproject.toml").read_text())["project"]["version"]
    assert module.__version__ == version


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_help_lists_every_verb(package: Path) -> None:
    commands = importlib.import_module(f"{import_name(package)}.cli").COMMANDS
    code, text = _run_cli(package, ["--help"])
    assert code == 0
    for verb in (*LIGHTNING_VERBS, *commands):
        assert re.search(rf"\b{re.escape(verb)}\b", text), f"`{package.name} --help` does not list {verb}"


def _stage_configs(package: Path) -> list[tuple[list[str], str]]:
    """(verb prefix, config name) for paper and demo, and for each further stage's <stage>_paper|demo."""
    commands = importlib.import_module(f"{import_name(package)}.cli").COMMANDS
    from medzoo.lightning import Stage

    pairs = [([], name) for name in ("paper", "demo")]
    for verb, command in commands.items():
        if isinstance(command, Stage):
            stage = verb.replace("-", "_")
            pairs += [([verb], f"{stage}_{name}") for name in ("paper", "demo")]
    return pairs


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_print_config_paper_and_demo(package: Path) -> None:
    for prefix, config in _stage_configs(package):
        code, text = _run_cli(package, [*prefix, "fit", "--config", config, "--print_config"])
        assert code == 0, f"{package.name} {' '.join(prefix)} fit --config {config} --print_config failed"
        printed = yaml.safe_load(text)
        model, data = printed["model"], printed.get("data") or {}
        model_args = model.get("init_args", model)
        data_args = data.get("init_args", data)
        assert "variant" in model_args and "overrides" in model_args, (
            f"{config}: model lacks variant/overrides"
        )
        missing = [a for a in DATA_ARGS if a not in data_args]
        assert not missing, f"{config}: data lacks {missing}"


def _smoke_commands(package: Path) -> list[list[str]]:
    data = tomllib.loads((package / "pyproject.toml").read_text())
    medzoo = data["tool"]["medzoo"]
    if "smoke" in medzoo:
        return medzoo["smoke"]
    demo = medzoo["demo"]
    return [demo[0], next(c for c in demo if "predict" in c[1:3])]


LIMITS = {
    "fit": [
        "--trainer.max_epochs=1",
        "--trainer.max_steps=2",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=2",
    ],
    "predict": ["--trainer.limit_predict_batches=2"],
}


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_demo_fit_then_predict_writes_predictions(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's fit (2 steps) then its predict: outputs land in <default_root_dir>/predictions/."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDZOO_CACHE", str(cache))
    for command in _smoke_commands(package):
        args = [a.format(cache=cache) for a in command[1:]]
        verb = next((a for a in args[:2] if a in LIGHTNING_VERBS), None)
        args += LIMITS.get(verb, []) + (["--trainer.enable_progress_bar=false"] if verb else [])
        code, _ = _run_cli(package, args)
        assert code == 0, f"{' '.join(command)} exited {code}"
    summaries = list(tmp_path.rglob("predictions/summary.csv"))
    assert summaries, "predict wrote no predictions/summary.csv"
    import pandas as pd

    assert len(pd.read_csv(summaries[0])) > 0
    assert all(p.parent.name == "predictions" for p in summaries)
