"""Building and training the small models Civitas uses for its demo and tests.

Pure Python over NumPy, ``onnx`` and ``tokenizers``: nothing of Django or the
apps. ``modelgen.lm`` holds the model definition and a NumPy reference forward
pass, ``modelgen.graphs`` the ONNX graphs and bundle writing, ``modelgen.genai``
the onnxruntime-genai layout, ``modelgen.backprop`` the training loss and its
gradients, and ``modelgen.train`` the tokenizer, training and the demo models.
The names below are re-exported eagerly so ``import modelgen`` reaches the
whole toolkit; the submodules import each other directly, never through this
package.
"""

from modelgen.backprop import lm_loss_and_grads
from modelgen.genai import build_genai_contrib, quantize_blockwise
from modelgen.graphs import (
    LAYOUTS,
    build_causal_lm,
    build_classifier,
    build_decoder_classifier,
    build_tabular_model,
    classifier_config,
    genai_config,
    write_bundle,
)
from modelgen.lm import (
    TRANSFORMERS_VERSION,
    LMConfig,
    default_position_ids,
    init_weights,
    lm_head_matrix,
    log_softmax,
    numpy_forward,
    rope_inv_freq,
    weight_shapes,
)
from modelgen.train import (
    CONTRIB_LAYOUTS,
    CORPUS_DIR,
    DEMO_SPECS,
    SPECIAL_TOKENS,
    TABULAR_FEATURES,
    DemoSpec,
    corpus_documents,
    demo_models,
    layout_record,
    perplexity,
    synthetic_tabular,
    train_classifier,
    train_lm,
    train_tokenizer,
    write_classifier_bundle,
    write_lm_bundle,
    write_tabular_bundle,
)

__all__ = [
    "CONTRIB_LAYOUTS",
    "CORPUS_DIR",
    "DEMO_SPECS",
    "LAYOUTS",
    "SPECIAL_TOKENS",
    "TABULAR_FEATURES",
    "TRANSFORMERS_VERSION",
    "DemoSpec",
    "LMConfig",
    "build_causal_lm",
    "build_classifier",
    "build_decoder_classifier",
    "build_genai_contrib",
    "build_tabular_model",
    "classifier_config",
    "corpus_documents",
    "default_position_ids",
    "demo_models",
    "genai_config",
    "init_weights",
    "layout_record",
    "lm_head_matrix",
    "lm_loss_and_grads",
    "log_softmax",
    "numpy_forward",
    "perplexity",
    "quantize_blockwise",
    "rope_inv_freq",
    "synthetic_tabular",
    "train_classifier",
    "train_lm",
    "train_tokenizer",
    "weight_shapes",
    "write_bundle",
    "write_classifier_bundle",
    "write_lm_bundle",
    "write_tabular_bundle",
]
