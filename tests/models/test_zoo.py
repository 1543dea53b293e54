import pytest
import torch

from advkit.errors import InvalidParameterError
from advkit.models.zoo import ZOO_NAMES, build

SHAPES = {"mlp": (3, 5, 5), "cnn-small": (1, 8, 8), "lenet": (1, 28, 28), "cnn-madry": (1, 28, 28),
          "cnn-wong": (1, 28, 28)}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_forward_gives_logits_of_each_class(name):
    shape = SHAPES[name]
    model = build(name, input_shape=shape, n_classes=7, generator=torch.Generator().manual_seed(0))
    out = model(torch.rand(4, *shape))
    assert out.shape == (4, 7)
    assert out.dtype == torch.float32
    assert not model.training
    cfg = model.advkit_config
    assert (cfg["name"], cfg["input_shape"], cfg["n_classes"]) == (name, shape, 7)


def test_architectures_follow_the_papers():
    lenet = build("lenet", input_shape=(1, 28, 28), n_classes=10)
    convs = [m for m in lenet.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in lenet.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(6, (5, 5), (2, 2)),
                                                                          (16, (5, 5), (0, 0))]
    assert [(f.in_features, f.out_features) for f in fcs] == [(400, 120), (120, 84), (84, 10)]
    madry = build("cnn-madry", input_shape=(1, 28, 28), n_classes=10)
    fcs = [m for m in madry.modules() if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(64 * 7 * 7, 1024), (1024, 10)]
    wong = build("cnn-wong", input_shape=(1, 28, 28), n_classes=10)
    convs = [m for m in wong.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (16, (4, 4), (2, 2), (1, 1)), (32, (4, 4), (2, 2), (1, 1))]
    fcs = [m for m in wong.modules() if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(32 * 7 * 7, 100), (100, 10)]
    small = build("cnn-small", input_shape=(1, 8, 8), n_classes=10)
    convs = [m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [32, 64]
    mlp = build("mlp", input_shape=(64,), n_classes=10)
    fcs = [(f.in_features, f.out_features) for f in mlp.modules() if isinstance(f, torch.nn.Linear)]
    assert fcs == [(64, 256), (256, 128), (128, 10)]
    assert mlp.advkit_config["kwargs"] == {"hidden": (256, 128)}


def test_mlp_hidden_option():
    mlp = build("mlp", input_shape=(10,), n_classes=2, hidden=[5])
    fcs = [(f.in_features, f.out_features) for f in mlp.modules() if isinstance(f, torch.nn.Linear)]
    assert fcs == [(10, 5), (5, 2)]
    assert mlp.advkit_config["kwargs"] == {"hidden": (5,)}
    linear = build("mlp", input_shape=(10,), n_classes=2, hidden=())
    assert sum(isinstance(m, torch.nn.Linear) for m in linear.modules()) == 1


def test_generator_makes_initial_weights_reproducible():
    def weights(seed):
        m = build("cnn-small", input_shape=(1, 8, 8), n_classes=10,
                  generator=torch.Generator().manual_seed(seed))
        return torch.cat([p.flatten() for p in m.parameters()])

    assert torch.equal(weights(3), weights(3))
    assert not torch.equal(weights(3), weights(4))


def test_unknown_name_lists_the_zoo():
    with pytest.raises(InvalidParameterError) as exc:
        build("resnet", input_shape=(1, 8, 8), n_classes=10)
    for name in ZOO_NAMES:
        assert name in str(exc.value)


def test_lenet_on_8x8_is_a_clear_error():
    with pytest.raises(InvalidParameterError) as exc:
        build("lenet", input_shape=(1, 8, 8), n_classes=10)
    msg = str(exc.value)
    assert "input_shape" in msg and "28x28" in msg and "cnn-small" in msg


@pytest.mark.parametrize("name", ["cnn-small", "lenet", "cnn-madry", "cnn-wong"])
def test_cnn_needs_channels_height_width(name):
    with pytest.raises(InvalidParameterError, match="channels, height, width"):
        build(name, input_shape=(64,), n_classes=10)


@pytest.mark.parametrize("kwargs", [
    {"input_shape": (0, 8, 8), "n_classes": 10},
    {"input_shape": "1x8x8", "n_classes": 10},
    {"input_shape": (1, 8, 8), "n_classes": 1},
    {"input_shape": (1, 8, 8), "n_classes": 2.5},
    {"input_shape": (1, 8, 8), "n_classes": 10, "generator": 3},
    {"input_shape": (1, 8, 8), "n_classes": 10, "width": 3},
])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(InvalidParameterError):
        build("cnn-small", **kwargs)


@pytest.mark.parametrize("hidden", [(0,), "256", (1.5,), (10**9,)])
def test_bad_hidden_sizes_raise(hidden):
    with pytest.raises(InvalidParameterError, match="hidden"):
        build("mlp", input_shape=(4,), n_classes=2, hidden=hidden)


@pytest.mark.parametrize("side", [4, 5, 7, 27, 28, 29])
def test_cnn_wong_takes_any_side_from_4(side):
    model = build("cnn-wong", input_shape=(2, side, side), n_classes=3)
    assert model(torch.rand(2, 2, side, side)).shape == (2, 3)
