"""``hfc-attack`` command line: Lightning's fit/validate/test/predict train and run the classifier under
attack; ``fit-gmm``, ``attack``, ``fit-detectors`` and ``evaluate`` run the HFC study on it.

Examples (the demo, CPU, offline)::

    hfc-attack fit --config demo                                   # the classifier ("train-classifier")
    hfc-attack fit-gmm --ckpt_path best                            # runs/hfc-attack-demo/gmm.npz
    hfc-attack attack --attack bim --eps 2 --split train           # detectors learn plain BIM
    hfc-attack attack --attack bim --eps 2 --split test
    hfc-attack attack --attack bim --eps 2 --split test --hfc true
    hfc-attack fit-detectors --attack_dir runs/hfc-attack-demo/attacks/bim-eps2/train
    hfc-attack evaluate --attack_dirs A/bim-eps2/test,A/bim_hfc-eps2/test   # A = runs/hfc-attack-demo/attacks
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hfc_attack.attacks import build_attack, other_class
from hfc_attack.data import ClassificationDataModule, ImageClassificationDataset
from hfc_attack.detectors import DETECTORS, LayerFusionDetector, load_detectors, save_detectors
from hfc_attack.gmm import ClassConditionalGMMs, fit_class_gmms
from hfc_attack.module import ClassifierModule
from hfc_attack.pipeline import detector_inputs, mahalanobis_preprocess
from hfc_attack.writers import AdversarialImageWriter
from medzoo.errors import MedzooDataError
from medzoo.io import write_csv, write_json
from medzoo.lightning import cli, resolve_ckpt_path
from medzoo.metrics import detection_auroc, tpr_at_tnr

DEMO_ROOT = Path("runs/hfc-attack-demo")  # trainer.default_root_dir of configs/demo.yaml


def load_checkpoint(
    ckpt_path: str | Path, root_dir: Path, data_root: Path | None = None
) -> tuple[ClassifierModule, ClassificationDataModule]:
    """The trained classifier (eval mode) and its DataModule from a `fit` checkpoint (``weights_only``)."""
    ckpt = resolve_ckpt_path(ckpt_path, root_dir)
    try:
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or pickled objects weights_only refuses
        raise MedzooDataError(
            ckpt, f"an unreadable checkpoint ({type(error).__name__})", "a `hfc-attack fit` checkpoint"
        ) from error
    if not isinstance(raw, dict) or "state_dict" not in raw or "hyper_parameters" not in raw:
        raise MedzooDataError(
            ckpt, "a file without state_dict/hyper_parameters", "a `hfc-attack fit` checkpoint"
        )
    accepted = set(inspect.signature(ClassifierModule.__init__).parameters) - {
        "self",
        "optimizer",
        "scheduler",
    }
    module = ClassifierModule(**{k: v for k, v in dict(raw["hyper_parameters"]).items() if k in accepted})
    module.load_state_dict(raw["state_dict"])
    data_hp = dict(raw.get("datamodule_hyper_parameters") or {})
    accepted = set(inspect.signature(ClassificationDataModule.__init__).parameters) - {"self"}
    data_hp = {k: v for k, v in data_hp.items() if k in accepted}
    if data_root is not None:
        data_hp["root"] = data_root
    return module.eval(), ClassificationDataModule(**data_hp)


def _stack(
    dataset: ImageClassificationDataset, indices: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    indices = range(len(dataset)) if indices is None else indices
    samples = [dataset[i] for i in indices]
    return torch.stack([s["image"] for s in samples]), torch.tensor([s["label"] for s in samples])


def _predict(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )


def fit_gmm(
    ckpt_path: str = "best",
    root_dir: Path = DEMO_ROOT,
    data_root: Path | None = None,
    output: Path | None = None,
    n_components: int = 64,
    max_channels: int = 512,
    n_init: int = 2,
    max_iter: int = 1000,
    batch_size: int = 32,
    seed: int = 0,
) -> Path:
    """Fit per-class, per-layer Bayesian GMMs on the clean features of correctly classified training images.

    Args:
        ckpt_path: a `fit` checkpoint, `best` (<root_dir>/checkpoints/best.ckpt, the best validation
            epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        root_dir: the run folder (the config's trainer.default_root_dir).
        data_root: dataset folder replacing the one recorded in the checkpoint.
        output: the npz to write (default <root_dir>/gmm.npz); arrays only, read without pickle.
        n_components: mixture components K per class and layer (the paper: 64; capped by the class size).
        max_channels: layers with more channels are skipped (the reference: 512).
        n_init, max_iter: scikit-learn BayesianGaussianMixture settings.
        batch_size: images per forward pass.
        seed: the mixtures' random_state.
    """
    module, data = load_checkpoint(ckpt_path, root_dir, data_root)
    images, labels = _stack(data.dataset("train"))
    inputs = detector_inputs(module.model, images, batch_size, max_channels)
    correct = inputs.pred == labels.numpy()
    features = {k: v[correct] for k, v in inputs.features.items()}
    gmms = fit_class_gmms(features, labels.numpy()[correct], n_components, n_init, max_iter, seed=seed)
    path = gmms.save(Path(output) if output is not None else Path(root_dir) / "gmm.npz")
    print(
        f"fitted {len(gmms.layers)} layers x {len(np.unique(labels[correct]))} classes "
        f"on {int(correct.sum())} images -> {path}"
    )
    return path


def attack(
    attack: str = "bim",
    eps: float = 1.0,
    steps: int | None = None,
    alpha: float | None = None,
    hfc: bool = False,
    hfc_weight: float = 1.0,
    targeted: bool = False,
    gmm: Path | None = None,
    split: str = "test",
    ckpt_path: str = "best",
    root_dir: Path = DEMO_ROOT,
    data_root: Path | None = None,
    output_dir: Path | None = None,
    max_channels: int = 512,
    limit: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
) -> Path:
    """Attack every image of a split; write adversarial PNG + npy per image and summary.csv.

    Args:
        attack: fgsm, bim, pgd, mifgsm, di, ti or cw.
        eps: the L-inf budget in 1/256 units (the paper's eps = 1 ... 8).
        steps: iterations (default: the attack's; with --hfc: 2 eps / alpha as in the reference).
        alpha: step size in 1/256 units (default: the attack's; with --hfc: eps / 10).
        hfc: add the HFC term (targeted toward the other class, with the mixtures of --gmm).
        hfc_weight: lambda of CE + lambda * HFC.
        targeted: plain attacks: descend CE toward the other class instead of ascending CE.
        gmm: mixtures written by `fit-gmm` (default <root_dir>/gmm.npz).
        split: train, val or test.
        ckpt_path: a `fit` checkpoint, `best` (<root_dir>/checkpoints/best.ckpt, the best validation
            epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        root_dir: the run folder.
        data_root: dataset folder replacing the one recorded in the checkpoint.
        output_dir: default <root_dir>/attacks/<attack>[_hfc]-eps<eps>/<split>.
        max_channels: feature layers the HFC term may use (<= this many channels).
        limit: attack only the first N images of the split.
        batch_size: images per attack batch.
        seed: torch seed (random starts, DI).
    """
    torch.manual_seed(seed)
    module, data = load_checkpoint(ckpt_path, root_dir, data_root)
    model = module.model
    settings: dict[str, Any] = {}
    if steps is not None:
        settings["steps"] = steps
    if alpha is not None:
        settings["alpha"] = alpha / 256
    if hfc:
        gmms = ClassConditionalGMMs.load(Path(gmm) if gmm is not None else Path(root_dir) / "gmm.npz")
        settings.setdefault("alpha", eps / 10 / 256)
        settings.setdefault("steps", max(1, round(2 * eps / 256 / settings["alpha"])))
        settings.update(hfc=gmms.hfc_loss(), hfc_weight=hfc_weight, max_channels=max_channels, targeted=True)
    elif targeted:
        settings["targeted"] = True
    adversary = build_attack(attack, model, eps / 256, **settings)
    dataset = data.dataset(split)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    name = f"{attack}{'_hfc' if hfc else ''}-eps{eps:g}"
    folder = Path(output_dir) if output_dir is not None else Path(root_dir) / "attacks" / name / split
    writer = AdversarialImageWriter(folder)
    rows = []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        images, labels = _stack(dataset, idx)
        target = other_class(labels, model.num_classes)
        adv = adversary(images, labels, target)
        pred_clean, pred_adv = _predict(model, images, batch_size), _predict(model, adv, batch_size)
        goal_met = (pred_adv == target) if getattr(adversary, "targeted", False) else (pred_adv != labels)
        prediction = {
            "name": [dataset.name(i) for i in idx],
            "adversarial": adv.numpy(),
            "clean": images.numpy(),
            "label": labels.numpy(),
            "target": target.numpy(),
            "pred_clean": pred_clean.numpy(),
            "pred_adv": pred_adv.numpy(),
            "success": goal_met.numpy(),
            "hfc": hfc,
        }
        rows += writer.write_batch(prediction, None, folder)
    path = writer.write_summary(rows, folder)
    table = pd.DataFrame(rows)
    correct = table["pred_clean"] == table["label"]
    rate = float(table.loc[correct, "success"].mean()) if correct.any() else float("nan")
    print(f"{name} on {n} {split} images: success rate {rate:.3f} on the correctly classified -> {path}")
    return path


def _adversarial_set(
    attack_dir: Path, dataset: ImageClassificationDataset
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, pd.DataFrame]:
    """Clean images, their adversarial versions and labels of the scored rows (correct and successful)."""
    summary = Path(attack_dir) / "summary.csv"
    if not summary.is_file():
        raise MedzooDataError(summary, "no such file", "the summary.csv of `hfc-attack attack`")
    table = pd.read_csv(summary)
    table["attacked"] = table["pred_clean"] == table["label"]
    scored = table[table["attacked"] & table["success"].astype(bool)]
    if scored.empty:
        raise MedzooDataError(summary, "no successful attack on a correctly classified image", "at least one")
    index = {dataset.name(i): i for i in range(len(dataset))}
    missing = [s for s in scored["source"] if s not in index]
    if missing:
        raise MedzooDataError(
            summary, f"sources not in the split: {missing[:3]}", "images of the attacked split"
        )
    clean, labels = _stack(dataset, [index[s] for s in scored["source"]])
    adv = torch.stack(
        [torch.from_numpy(np.load(Path(attack_dir) / p, allow_pickle=False)) for p in scored["image"]]
    )
    return clean, adv, labels, table


def _split_of(attack_dir: Path) -> str:
    split = Path(attack_dir).name
    if split not in ("train", "val", "test"):
        raise MedzooDataError(
            attack_dir, f"a folder named {split!r}", "an attack folder ending in train|val|test"
        )
    return split


def fit_detectors(
    attack_dir: Path,
    detectors: list[str] = ["kd", "lid", "mahalanobis", "svm", "dnn", "bu", "kd_bu"],  # noqa: B006
    ckpt_path: str = "best",
    root_dir: Path = DEMO_ROOT,
    data_root: Path | None = None,
    output: Path | None = None,
    max_channels: int = 512,
    bu_samples: int = 50,
    batch_size: int = 32,
) -> Path:
    """Fit adversarial-example detectors on clean vs adversarial images of one attack folder (train split).

    Args:
        attack_dir: a folder written by `attack` (e.g. .../attacks/bim-eps2/train); the detectors learn its
            successful adversarials of correctly classified images against the same clean images.
        detectors: names among kd, lid, mahalanobis, svm, dnn, bu, kd_bu.
        ckpt_path: a `fit` checkpoint, `best` (<root_dir>/checkpoints/best.ckpt, the best validation
            epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        root_dir: the run folder.
        data_root: dataset folder replacing the one recorded in the checkpoint.
        output: the npz to write (default <root_dir>/detectors.npz); arrays only.
        max_channels: feature layers used (<= this many channels).
        bu_samples: MC-dropout samples of BU (0 leaves BU and KD+BU out).
        batch_size: images per forward pass.
    """
    unknown = sorted(set(detectors) - set(DETECTORS))
    if unknown:
        raise MedzooDataError("--detectors", f"{unknown}", f"names among {', '.join(DETECTORS)}")
    module, data = load_checkpoint(ckpt_path, root_dir, data_root)
    clean, adv, labels, _ = _adversarial_set(attack_dir, data.dataset(_split_of(attack_dir)))
    clean_in = detector_inputs(module.model, clean, batch_size, max_channels, bu_samples)
    adv_in = detector_inputs(module.model, adv, batch_size, max_channels, bu_samples)
    fitted = {}
    for name in detectors:
        if name in ("bu", "kd_bu") and bu_samples <= 0:
            continue
        detector = DETECTORS[name]()
        if isinstance(detector, LayerFusionDetector) and detector.noise > 0:
            # Pre-processing needs the fitted class means: statistics first, then the fusion head.
            detector.fit_statistics(clean_in, labels.numpy())
            for inputs, images in ((clean_in, clean), (adv_in, adv)):
                inputs.preprocessed = mahalanobis_preprocess(
                    module.model, images, detector, batch_size, max_channels
                )
            fitted[name] = detector.fit_head(clean_in, adv_in)
            continue
        fitted[name] = detector.fit(clean_in, adv_in, labels.numpy())
    path = save_detectors(Path(output) if output is not None else Path(root_dir) / "detectors.npz", fitted)
    print(f"fitted {', '.join(fitted)} on {len(clean)} clean + {len(adv)} adversarial images -> {path}")
    return path


def evaluate(
    attack_dirs: list[Path],
    detectors: Path | None = None,
    ckpt_path: str = "best",
    root_dir: Path = DEMO_ROOT,
    data_root: Path | None = None,
    output_dir: Path | None = None,
    max_channels: int = 512,
    bu_samples: int = 50,
    tnr: float = 0.9,
    batch_size: int = 32,
) -> pd.DataFrame:
    """The attacks x detectors table: detector AUROC and TPR at 90% TNR, clean vs adversarial.

    Only correctly classified images that the attack fooled are scored (their clean versions are the
    negatives). Writes evaluation.csv and evaluation.json (atomically) into --output_dir.

    Args:
        attack_dirs: folders written by `attack` (e.g. .../attacks/bim-eps2/test), one per attack.
        detectors: the npz of `fit-detectors` (default <root_dir>/detectors.npz).
        ckpt_path: a `fit` checkpoint, `best` (<root_dir>/checkpoints/best.ckpt, the best validation
            epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        root_dir: the run folder.
        data_root: dataset folder replacing the one recorded in the checkpoint.
        output_dir: default <root_dir>.
        max_channels: must equal the value used by fit-detectors.
        bu_samples: MC-dropout samples for BU and KD+BU (0 leaves them out).
        tnr: the true-negative rate of the TPR column.
        batch_size: images per forward pass.

    Columns: attack, eps_256, hfc, n_correct, n_scored, success_rate, detector, auroc, tpr_at_tnr.
    """
    module, data = load_checkpoint(ckpt_path, root_dir, data_root)
    fitted = load_detectors(Path(detectors) if detectors is not None else Path(root_dir) / "detectors.npz")
    rows = []
    for attack_dir in attack_dirs:
        attack_dir = Path(attack_dir)
        clean, adv, _, table = _adversarial_set(attack_dir, data.dataset(_split_of(attack_dir)))
        clean_in = detector_inputs(module.model, clean, batch_size, max_channels, bu_samples)
        adv_in = detector_inputs(module.model, adv, batch_size, max_channels, bu_samples)
        attacked = table[table["attacked"]]
        for detector in fitted.values():
            if isinstance(detector, LayerFusionDetector) and detector.noise > 0:
                for inputs, images in ((clean_in, clean), (adv_in, adv)):
                    inputs.preprocessed = mahalanobis_preprocess(
                        module.model, images, detector, batch_size, max_channels
                    )
        for name, detector in fitted.items():
            if name in ("bu", "kd_bu") and bu_samples <= 0:
                continue  # BU needs MC-dropout samples
            clean_scores, adv_scores = detector.score(clean_in), detector.score(adv_in)
            rows.append(
                {
                    "attack": attack_dir.parent.name,
                    "eps_256": float(attacked["linf_256"].max()),
                    "hfc": bool(attacked["hfc"].iloc[0]),
                    "n_correct": len(attacked),
                    "n_scored": len(adv),
                    "success_rate": float(attacked["success"].astype(bool).mean()),
                    "detector": name,
                    "auroc": detection_auroc(clean_scores, adv_scores),
                    "tpr_at_tnr": tpr_at_tnr(clean_scores, adv_scores, tnr),
                }
            )
    result = pd.DataFrame(rows)
    folder = Path(output_dir) if output_dir is not None else Path(root_dir)
    write_csv(folder / "evaluation.csv", result)
    write_json(folder / "evaluation.json", {"tnr": tnr, "rows": rows})
    print(result.pivot_table(index="detector", columns="attack", values="auroc").round(3).to_string())
    return result


# The verbs beyond Lightning's fit/validate/test/predict (`fit` is the paper's "train-classifier").
COMMANDS: dict[str, Callable[..., Any]] = {
    "fit-gmm": fit_gmm,
    "attack": attack,
    "fit-detectors": fit_detectors,
    "evaluate": evaluate,
}


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the `hfc-attack` console script."""
    return cli(ClassifierModule, ClassificationDataModule, package="hfc_attack", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()
