"""The drift baseline: a sample of the prepared rows with the model inputs built as for training,
and the champion's predictions on them.

Why these rows: they are what the model was trained on (the training set is this table through
the same point-in-time feature lookups), they exist on both platforms without an extra table, and
they follow the data when the pipeline retrains on newer rows. Served predictions are compared
with the champion's predictions on these rows, never with their labels: a classifier's
probabilities are not distributed like 0 / 1 labels, and even a regressor's predictions are
smoother than its labels, so comparing with labels raises drift on a healthy model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pandas as pd

from mlops_template.monitoring.unpack import PREDICTION
from mlops_template.platform.feature_store import load_model_over_features
from mlops_template.registry.versions import CHAMPION
from mlops_template.scoring.batch import resolve_alias
from mlops_template.training.dataset import build_training_set
from mlops_template.training.evaluate import predictions
from mlops_template.training.model import to_model_frame

if TYPE_CHECKING:
    from mlops_template.platform import Platform
    from mlops_template.problem_spec import ProblemSpec

log = logging.getLogger(__name__)

SAMPLE_SEED = 17
PREPARED_PRODUCER = "task prepare_data of job pipeline"


def baseline_inputs(platform: Platform, spec: ProblemSpec, schema: str, rows: int) -> pd.DataFrame:
    """About `rows` prepared rows of `schema` (`catalog.schema`, a seeded sample) with the model
    inputs in their signature types and the label."""
    table = spec.prepared_table_name(schema)
    prepared = platform.read_table(table, produced_by=PREPARED_PRODUCER)
    total = prepared.count()
    if total > rows:
        prepared = prepared.sample(fraction=rows / total, seed=SAMPLE_SEED)
    frame = to_model_frame(build_training_set(platform, spec, prepared, schema), spec)
    log.info("baseline: %d of %d rows of %s", len(frame), total, table)
    return frame[[*spec.input_names, spec.label]]


def baseline_sample(
    platform: Platform, spec: ProblemSpec, schema: str, rows: int, model_name: str
) -> pd.DataFrame:
    """The baseline's inputs and label, and `prediction`: the champion's prediction on each row
    (for a binary classifier, its probability of label 1)."""
    frame = baseline_inputs(platform, spec, schema, rows)
    champion = resolve_alias(model_name, CHAMPION)
    model = load_model_over_features(champion.uri)
    frame[PREDICTION] = predictions(spec, model.predict(frame[spec.input_names]))
    log.info("baseline predictions by %s version %d", model_name, champion.version)
    return frame
