"""A scenario's phases checked against the data they will work on, before the first one runs.

Reading a scenario file checks names and values (:mod:`engine.studies.scenarios`); what only
the dataset can refuse (a target label it lacks, a trigger larger than its images, a data
fraction that selects no image) is checked here, for every phase, through the same
:meth:`~engine.jobs.spec.JobSpec.validate` a headless job goes through. A later phase's input
run does not exist yet, so its dataset is the one the phase it works on (``on``) trained with,
known from the config. Scenarios, recipes and sweeps call this before their folder is made:
a file that could never finish is refused whole, naming the file and the phase.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.data.meta import DatasetMeta, dataset_meta
from engine.errors import ConfigError, UserError
from engine.studies.scenarios import Scenario

#: dataset_meta answers by (name, data_dir, train_size, test_size): a plugin's dataset is
#: loaded once per check, not once per phase or trial
MetaCache = dict[tuple[Any, ...], DatasetMeta]


def check_scenario_data(
    scenario: Scenario,
    config: TrainConfig,
    *,
    trial: str = "",
    cache: MetaCache | None = None,
) -> None:
    """Refuse the scenario when a phase's params do not fit its dataset; the line names the
    file, the phase and (``trial``) the grid point."""
    cache = {} if cache is None else cache
    origin = scenario.source or f"scenario {scenario.name}"
    if trial:
        origin = f"{origin}, trial {trial}:"
    models: dict[str, DatasetMeta] = {}
    for spec in scenario.phases:
        where = f"{origin} [[phases]] {spec.name}"
        try:
            if spec.makes_model_from_scratch:
                job = spec.job_spec(config, None, None, scenario.name)
                checked = job.validate(inputs=False)
                models[spec.name] = data = train_meta(checked.config, cache)
                job.job_kind().check_data(job, checked, data)
                continue
            if spec.from_model and not spec.data_free:
                # embedded into phase ``on``'s model, trained on this very data: the model it
                # needs does not exist yet, and its shape is this dataset's
                models[spec.name] = models[spec.on]
                continue
            # the input run is made by phase ``on``: its name stands in for the folder
            job = spec.job_spec(config, Path(spec.on), None, scenario.name)
            data = models[spec.name] = models[spec.on]
            if spec.data_free and getattr(spec.parsed_params(), "adjust", "") != "data":
                data = dataclasses.replace(data, train_size=0)  # reads the test split only
            job.validate(inputs=False, data=data)
        except UserError as exc:
            raise ConfigError(f"{where}: {as_keys(str(exc))}") from None


def check_trials_data(trials: Iterable[tuple[str, Scenario, TrainConfig]]) -> None:
    """:func:`check_scenario_data` for every trial of a recipe or a sweep (label, scenario,
    config), sharing what is known of each dataset."""
    cache: MetaCache = {}
    for label, scenario, config in trials:
        check_scenario_data(scenario, config, trial=label, cache=cache)


def train_meta(config: TrainConfig, cache: MetaCache) -> DatasetMeta:
    """The dataset a phase with this train config trains on."""
    key = (config.dataset, config.data_dir, config.train_size, config.test_size)
    if key not in cache:
        cache[key] = dataset_meta(
            config.dataset,
            config.data_dir or None,
            train_size=config.train_size,
            test_size=config.test_size,
        )
    return cache[key]


def as_keys(message: str) -> str:
    """A job's message in a file's terms: ``--data-fraction`` is the ``data_fraction`` key
    there (the flags' wording is the command line's)."""
    return FLAG.sub(lambda match: match.group(1).replace("-", "_"), message)


FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
