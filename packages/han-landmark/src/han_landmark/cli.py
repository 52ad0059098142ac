"""``han-landmark fit | validate | test | predict | export`` (LightningCLI with medzoo's defaults).

Examples::

    han-landmark fit --config demo                       # synthetic phantoms, CPU, a few minutes
    han-landmark test --config demo --ckpt_path best     # runs/han-landmark-demo/checkpoints/best.ckpt
    han-landmark predict --config demo --ckpt_path best --data.predict_root my_xrays/
    han-landmark fit --config paper --data.root /data/ISBI2015
    han-landmark fit --config paper --data.root /data/ISBI2015 --ckpt_path last   # resume (newest state)
    han-landmark export --ckpt_path best --input_size "[128, 128]" --keep_aspect false --padding 1

``predict`` writes per-image CSV/JSON/overlay PNGs and ``summary.csv`` into
``<trainer.default_root_dir>/predictions/``; ``export`` writes ``han_landmark.onnx`` (or
``han_landmark.safetensors``) and ``han_landmark.json``, the input and output contract, into ``--output_dir``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from han_landmark import __version__
from han_landmark.data import LandmarkDataModule
from han_landmark.module import HANLandmarkModule
from han_landmark.transforms import IMAGENET_MEAN, IMAGENET_STD
from medzoo.errors import MedzooDataError
from medzoo.io import atomic_write, write_json
from medzoo.lightning import cli, resolve_ckpt_path

DEMO_ROOT = Path("runs/han-landmark-demo")  # trainer.default_root_dir of configs/demo.yaml


def load_module(ckpt_path: str | Path, root_dir: str | Path = DEMO_ROOT) -> HANLandmarkModule:
    """A trained module (eval mode, CPU) from a checkpoint of ``fit``, read with ``weights_only=True``."""
    path = resolve_ckpt_path(ckpt_path, root_dir)
    try:
        module = HANLandmarkModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError) as error:
        raise MedzooDataError(
            path, f"an unreadable checkpoint ({type(error).__name__})", "a checkpoint of `han-landmark fit`"
        ) from error
    return module.eval()


def export_contract(
    module: HANLandmarkModule, input_size: Sequence[int], keep_aspect: bool, padding: float, file: str
) -> dict[str, Any]:
    """What a caller of the exported network must do before and after it (written as JSON)."""
    height, width = int(input_size[0]), int(input_size[1])
    return {
        "file": file,
        "package": f"han-landmark {__version__}",
        "variant": module.hparams.get("variant"),
        "num_landmarks": module.num_landmarks,
        "input": {
            "name": "image",
            "shape": [1, 3, height, width],
            "dtype": "float32",
            "preprocess": [
                "read the image; uint8 / 255, other dtypes min-max scaled to [0, 1]; grey repeated to RGB",
                "place it into the input: keep_aspect=false stretches it to (H, W); keep_aspect=true "
                "scales it by s = min(H / (h * padding), W / (w * padding)), resizes it (antialiased "
                "bilinear) to (round(h * s), round(w * s)) and centres it at offset "
                "((H - h') // 2, (W - w') // 2) on black",
                "subtract mean and divide by std per channel (ImageNet)",
            ],
            "keep_aspect": bool(keep_aspect),
            "padding": float(padding),
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "outputs": [
            {
                "name": name,
                "shape": [1, module.num_landmarks, height // stride, width // stride],
                "stride": stride,
            }
            for name, stride in zip(("quarter", "half", "full"), module.model.strides, strict=True)
        ],
        "postprocess": [
            "per output and landmark: argmax of the heatmap, refined to sub-pixel precision "
            f"({module.decode_refine!r}, medzoo.heatmaps.decode_heatmaps)",
            "heatmap (x, y) -> input pixels: (x + 0.5) * stride - 0.5 (pixel centres at integers)",
            "average the three outputs' coordinates (the paper's prediction); score = mean heatmap peak",
            "input pixels -> original pixels: undo the placement (subtract the offset, divide by the scale, "
            "per axis: x = (x_in - offset_x + 0.5) / s_x - 0.5)",
        ],
    }


def export(
    ckpt_path: str = "best",
    format: Literal["onnx", "safetensors"] = "onnx",
    input_size: list[int] | None = None,
    keep_aspect: bool = True,
    padding: float = 1.25,
    output_dir: Path = Path("export"),
    root_dir: Path = DEMO_ROOT,
    opset: int = 17,
) -> Path:
    """Export a trained HAN for deployment: an ONNX graph or safetensors weights, with a JSON contract.

    Args:
        ckpt_path: checkpoint written by `han-landmark fit`, `best` (<root_dir>/checkpoints/best.ckpt, the
            best validation epoch) or `last` (<root_dir>/checkpoints/last.ckpt, the newest).
        format: `onnx` (the network, image -> three heatmaps, for onnxruntime) or `safetensors` (the module's
            weights; rebuild with `create_model(variant, num_landmarks=K, **overrides)`).
        input_size: [H, W] of the network input the model was trained with (the config's data.input_size),
            e.g. "[1216, 1024]" for `paper`, "[128, 128]" for `demo`. The ONNX graph has this fixed size
            and batch 1.
        keep_aspect, padding: how images were placed into the input (data.keep_aspect, data.padding:
            `paper` true and 1.25; `demo` and `chest` false and 1); written into the contract.
        output_dir: folder written atomically: han_landmark.onnx or han_landmark.safetensors, and
            han_landmark.json (input shape, pre-processing, outputs, decoding).
        root_dir: the run folder that `--ckpt_path best|last` refers to (the config's
            trainer.default_root_dir).
        opset: ONNX opset.

    Returns:
        The path of the exported model file.
    """
    if input_size is None or len(input_size) != 2 or min(input_size) < 32:
        raise MedzooDataError(
            "--input_size", repr(input_size), "[H, W] of the training input (data.input_size), each >= 32"
        )
    if format not in ("onnx", "safetensors"):
        raise MedzooDataError("--format", repr(format), "onnx or safetensors")
    module = load_module(ckpt_path, root_dir)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"han_landmark.{format}"
    if format == "safetensors":
        metadata = {"variant": str(module.hparams.get("variant")), "num_landmarks": str(module.num_landmarks)}
        module.model.train(False)
        from medzoo.weights import save_weights

        save_weights(module.model, target, metadata=metadata)
    else:
        buffer = io.BytesIO()
        example = torch.zeros(1, 3, int(input_size[0]), int(input_size[1]))
        # the TorchScript exporter: BRA's routing (top-k + gather) traces to plain ONNX ops
        torch.onnx.export(
            module.model,
            (example,),
            buffer,
            input_names=["image"],
            output_names=["quarter", "half", "full"],
            opset_version=opset,
            dynamo=False,
        )
        with atomic_write(target, "wb") as handle:
            handle.write(buffer.getvalue())
    write_json(
        output_dir / "han_landmark.json",
        export_contract(module, input_size, keep_aspect, padding, target.name),
    )
    return target


# Extra verbs beside Lightning's fit/validate/test/predict.
COMMANDS: dict = {"export": export}


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``han-landmark`` command (returns None so the console script exits with 0)."""
    cli(HANLandmarkModule, LandmarkDataModule, package="han_landmark", args=args, commands=COMMANDS)


if __name__ == "__main__":
    main()
