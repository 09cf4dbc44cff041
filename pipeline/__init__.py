"""artgan: a reproducible GAN pipeline for art (DVC stages, MLflow tracking, offline TF-Inception FID)."""

__version__ = "0.1.0"
