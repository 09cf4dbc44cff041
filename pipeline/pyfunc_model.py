"""The MLflow pyfunc flavour of an artgan generator: seeds in, PNG images out.

MLflow loads this file itself ("models from code": no pickled class), so `mlflow models serve -m
models:/artgan-generator@champion` answers a POST to /invocations such as
    {"dataframe_records": [{"seed": 0}, {"seed": 1, "label": "animals-nature"}]}
with one row per seed: {"seed": 0, "label": "", "png": "<base64 PNG>"}. The image of a seed is the one
`artgan generate --seed` draws. It is the one module beside pipeline/tracking.py that imports mlflow,
because MLflow runs it.
"""

from __future__ import annotations

import mlflow
import pandas as pd  # the type hints of predict: MLflow reads them (a DataFrame: validated by the signature)
from mlflow.pyfunc import PythonModel

from pipeline.layout import CHECKPOINT_ARTIFACT

MAX_ROWS = 4096


class ArtganGenerator(PythonModel):
    def load_context(self, context) -> None:
        from pipeline.generate import Sampler

        self.sampler = Sampler.from_file(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pipeline.generate import png_base64

        if len(model_input) > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} seeds per request, got {len(model_input)}")
        seeds = [int(s) for s in model_input["seed"]]
        labels = None
        if "label" in model_input and self.sampler.classes:
            given = model_input["label"]
            if given.notna().any():
                labels = [
                    v if isinstance(v, str) and v else s % len(self.sampler.classes)
                    for v, s in zip(given.where(given.notna(), ""), seeds)
                ]
        y = self.sampler.labels(seeds, labels)
        images = self.sampler.images(seeds, labels)
        names = [self.sampler.classes[int(i)] for i in y] if y is not None else [""] * len(seeds)
        return pd.DataFrame({"seed": seeds, "label": names, "png": [png_base64(img) for img in images]})


mlflow.models.set_model(ArtganGenerator())
