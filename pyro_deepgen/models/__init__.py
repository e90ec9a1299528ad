"""Model/guide pairs."""

# EnumELBO is an objective (pyro_deepgen.infer); re-exported here, where the semi-supervised
# models and the code that trains them have always found it.
from pyro_deepgen.infer.enum_elbo import EnumELBO
from pyro_deepgen.models.categorical_vae import CategoricalVAE
from pyro_deepgen.models.classifiers import SupervisedClassifier, classification_error
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
from pyro_deepgen.models.m1 import M1
from pyro_deepgen.models.m2 import M1M2, M2
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
    DEFAULT_MODEL,
    MODELS,
    RUN_OPTIONS,
    ModelSpec,
    RunOption,
    build_model,
    load_model,
    model_options,
    model_spec,
    register_model,
    resolve_model,
    save_model,
)
from pyro_deepgen.models.sbn import SigmoidBeliefNet
from pyro_deepgen.models.vae import VAE

__all__ = [
    "CVAE",
    "CategoricalVAE",
    "DEFAULT_MODEL",
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
    "RUN_OPTIONS",
    "RunOption",
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
    "resolve_model",
    "save_model",
    "split_quadrants",
]
