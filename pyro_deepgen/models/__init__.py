"""Model/guide pairs."""

from pyro_deepgen.models.categorical_vae import CategoricalVAE
from pyro_deepgen.models.cvae import (
    CVAE,
    NNRegressor,
    conditional_nll,
    merge_quadrants,
    quadrant_dataset,
    quadrant_mask,
    split_quadrants,
)
from pyro_deepgen.models.dlgm import DLGM, LayerActiveUnits
from pyro_deepgen.models.nice import (
    NICE,
    DequantizedDataset,
    FlowModel,
    RealNVP,
    bits_per_dim,
    dequantize,
    inpaint,
)
from pyro_deepgen.models.registry import (
    MODELS,
    ModelSpec,
    build_model,
    load_model,
    model_options,
    model_spec,
    register_model,
    save_model,
)
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.semi_supervised import (
    M1,
    M1M2,
    M2,
    EnumELBO,
    SupervisedClassifier,
    classification_error,
)
from pyro_deepgen.models.vae import VAE

__all__ = [
    "CVAE",
    "CategoricalVAE",
    "DLGM",
    "DequantizedDataset",
    "EnumELBO",
    "FlowModel",
    "LayerActiveUnits",
    "M1",
    "M1M2",
    "M2",
    "MODELS",
    "ModelSpec",
    "NICE",
    "NNRegressor",
    "RealNVP",
    "SigmoidBeliefNet",
    "SupervisedClassifier",
    "VAE",
    "bits_per_dim",
    "build_model",
    "classification_error",
    "conditional_nll",
    "dequantize",
    "inpaint",
    "load_model",
    "merge_quadrants",
    "model_options",
    "model_spec",
    "quadrant_dataset",
    "quadrant_mask",
    "register_model",
    "save_model",
    "split_quadrants",
]
