"""The MLflow pyfunc flavour of an artgan translator: image bytes in, translated PNG bytes out.

MLflow loads this file itself ("models from code": no pickled class). `predict` takes a DataFrame with a column
`image` of image file bytes (PNG, JPEG, ...: any size or mode, converted as preprocess converts, to the translator's
image_size) and returns a DataFrame with a column `image` of PNG bytes, row for row. Behind `mlflow models serve`
the bytes travel base64-encoded (`{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}`); a str is
read as base64 here too. A row that is not an image fails the request with a message naming the row.
"""

from __future__ import annotations

import base64
import binascii
import io

import mlflow
import numpy as np
import pandas as pd  # the type hints of predict: MLflow reads them (a DataFrame: validated by the signature)
from mlflow.pyfunc import PythonModel

from pipeline.layout import CHECKPOINT_ARTIFACT

MAX_ROWS = 1024


def _bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a str image must be base64-encoded file bytes") from None
    raise ValueError(f"expected image file bytes, got {type(value).__name__}")


class ArtganTranslator(PythonModel):
    def load_context(self, context) -> None:
        from pipeline.translation.translator import Translator

        self.translator = Translator.from_file(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pipeline.generate import png_bytes

        if len(model_input) > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} images per request, got {len(model_input)}")
        images = []
        for i, value in enumerate(model_input["image"]):
            try:
                images.append(self.translator.convert(io.BytesIO(_bytes(value))))
            except Exception as exc:  # not an image, truncated, a bomb: the row and why, in one line
                raise ValueError(f"row {i}: not a readable image ({type(exc).__name__}: {exc})") from None
        size = self.translator.image_size
        batch = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
        return pd.DataFrame({"image": [png_bytes(img) for img in self.translator(batch)]})


mlflow.models.set_model(ArtganTranslator())
