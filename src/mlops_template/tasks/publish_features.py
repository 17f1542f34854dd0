"""Task `publish_features`: copy the latest row per key of every feature table to the online store.

A model logged with its feature lookups (`serving_features=lookup`) is served by looking its
features up by key: on Databricks in an Online Feature Store (`fe.publish_table`, the store
created on first use), locally in the snapshot files the local endpoint reads and reloads after
each publish. With `serving_features=request` (no online store, e.g. Databricks Free Edition)
clients send every model input, so nothing is published.
"""

from __future__ import annotations

import logging

from pydantic import Field

from mlops_template.platform import Platform
from mlops_template.problem_spec import load_problem
from mlops_template.tasks.common import PipelineTaskConfig, ServingFeatures, task_entry_point

log = logging.getLogger(__name__)


class PublishFeaturesConfig(PipelineTaskConfig):
    # The Databricks online store's name (bundle variable online_store; create_online_store: <= 63 bytes).
    online_store: str = Field(min_length=1, max_length=63)
    serving_features: ServingFeatures = "lookup"


def run(platform: Platform, config: PublishFeaturesConfig) -> None:
    if config.serving_features == "request":
        log.info("serving_features=request: clients send every model input; nothing to publish")
        return
    spec = load_problem()
    for name in spec.feature_table_names(config.schema_).values():
        platform.feature_store.publish_table(source_table_name=name, online_store=config.online_store)
        log.info("published %s to online store %s", name, config.online_store)


main = task_entry_point(PublishFeaturesConfig, run)
