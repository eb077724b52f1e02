import dataclasses

import pytest

from engine.config import TrainConfig, dump_toml
from engine.errors import ConfigError
from engine.registry import Registry, param, parse_params


@dataclasses.dataclass(frozen=True)
class Knobs:
    rate: float = param(0.1, "a rate", low=0.0, high=1.0, low_open=True)
    count: int = param(3, "a count", low=1)
    mode: str = param("a", "a mode", choices=("a", "b"))
    flag: bool = param(False, "a flag")


def test_parse_params_coerces_and_validates() -> None:
    knobs = parse_params(Knobs, {"rate": "0.5", "count": "7", "mode": "b", "flag": "yes"})
    assert knobs == Knobs(rate=0.5, count=7, mode="b", flag=True)
    assert parse_params(Knobs, {}) == Knobs()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rate": "0"}, "must be > 0.0"),
        ({"rate": "nan"}, "finite"),
        ({"rate": "1.5"}, "must be <= 1.0"),
        ({"count": "2.5"}, "expected a number"),
        ({"count": "0"}, "must be >= 1"),
        ({"mode": "c"}, "choose one of"),
        ({"flag": "maybe"}, "true or false"),
        ({"rat": "0.1"}, "did you mean 'rate'"),
    ],
)
def test_parse_params_rejects_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_params(Knobs, values)


def test_registry_suggests_closest_name() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("square")(object)
    reg.register("noise")(object)
    with pytest.raises(ConfigError, match="did you mean 'square'"):
        reg.get("sqare")
    with pytest.raises(ValueError):
        reg.register("noise")(object)


def test_train_config_toml_round_trip(tmp_path) -> None:
    import tomllib

    config = TrainConfig(dataset="synthetic", epochs=3, lr=0.01)
    text = dump_toml({"train": config.to_dict()})
    assert TrainConfig.from_mapping(tomllib.loads(text)["train"]) == config
