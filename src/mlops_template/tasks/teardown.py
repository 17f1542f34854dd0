"""Task `teardown` of job teardown: delete what the tasks created outside the bundle's resources.

`databricks bundle destroy` removes the bundle's resources (jobs, the schema with its tables and
models) but not what tasks created: the serving endpoint, the table's quality monitor and the
sticky A/B model. Run `databricks bundle run teardown -t T && databricks bundle destroy -t T`
(locally `mlops run teardown -t T`). Everything absent is skipped, so it can run again.
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops_template.monitoring.quality_monitor import quality_monitors
from mlops_template.platform import Platform
from mlops_template.registry.versions import is_not_found
from mlops_template.serving.deploy import endpoint_deployer
from mlops_template.serving.spec import ab_model_name
from mlops_template.tasks.common import TaskConfig, task_entry_point

log = logging.getLogger(__name__)


class TeardownConfig(TaskConfig):
    endpoint_name: str
    model_name: str  # its sticky A/B model `<model_name>_ab` is deleted; the model itself is not
    monitoring_table: str = ""  # its quality monitor is deleted (metric tables stay with the schema)


def run(platform: Platform, config: TeardownConfig) -> None:
    if endpoint_deployer(platform).delete(config.endpoint_name):
        log.info("deleted serving endpoint %s", config.endpoint_name)
    else:
        log.info("no serving endpoint %s", config.endpoint_name)
    if config.monitoring_table:
        if quality_monitors(platform).delete(config.monitoring_table):
            log.info("deleted the quality monitor of %s", config.monitoring_table)
        else:
            log.info("no quality monitor on %s", config.monitoring_table)
    _delete_ab_model(platform, ab_model_name(config.model_name))


def _delete_ab_model(platform: Platform, name: str) -> None:
    platform.configure_mlflow()
    try:
        MlflowClient().delete_registered_model(name)
    except MlflowException as error:
        if not is_not_found(error):
            raise
        log.info("no A/B model %s", name)
        return
    log.info("deleted the A/B model %s", name)


main = task_entry_point(TeardownConfig, run)
