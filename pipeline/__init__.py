"""artgan: a reproducible GAN pipeline for art (DVC stages, MLflow tracking, offline TF-Inception FID)."""

import os

__version__ = "0.1.0"

# Deterministic cuBLAS (bitwise-resumable GPU training). cuBLAS reads this once, when the process makes its
# first handle, so it is set on import of the package, before any stage, test or bench touches CUDA; a value
# the user set wins. No effect on CPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
