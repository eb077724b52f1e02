import pytest
import torch

from engine.errors import ConfigError
from engine.models import MODELS, Architecture, build_model


@pytest.mark.parametrize("name", ["lenet5", "digit-cnn", "object-cnn", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_fits_every_input_shape(name: str, shape: tuple[int, int, int]) -> None:
    model = build_model(Architecture(name, shape, 7))
    model.eval()
    assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_models_registry_lists_the_paper_architectures() -> None:
    assert {"lenet5", "digit-cnn", "object-cnn", "resnet18"} <= set(MODELS.names())
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        build_model(Architecture("resnet", (3, 32, 32), 10))


def test_architecture_record_round_trip() -> None:
    arch = Architecture("lenet5", (1, 28, 28), 11)
    assert Architecture.from_dict(arch.to_dict()) == arch
