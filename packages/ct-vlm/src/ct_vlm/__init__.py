"""CT-VLM: a 3D CT vision-language model after E3D-GPT (arXiv 2410.14200).

A 3D ViT pre-trained as an MAE on unlabelled CT, a 3D convolutional projector that shrinks its token grid,
and any Hugging Face causal LM (LoRA through peft) instruction-tuned for report generation, VQA and
diagnosis. Public API: the networks and their named configurations.
"""

from ct_vlm.models import (
    CTVLM,
    MAE3D,
    MODEL_CONFIGS,
    ConvProjector3D,
    LinearProjector,
    ViT3D,
    apply_lora,
    create_mae,
    create_model,
    create_vision_encoder,
)

__version__ = "0.1.2"

__all__ = [
    "CTVLM",
    "MAE3D",
    "MODEL_CONFIGS",
    "ConvProjector3D",
    "LinearProjector",
    "ViT3D",
    "__version__",
    "apply_lora",
    "create_mae",
    "create_model",
    "create_vision_encoder",
]
