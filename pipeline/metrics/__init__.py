"""Image-quality metrics on TF-Inception features: one module per metric."""
