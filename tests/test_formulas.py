"""The course's formulas, pinned against the library's code (Dive into Deep Learning, d2l.ai).

Every test compares the library with a computation written out here, never with the library itself,
so that a change to a loss, an initialiser, a block or a shape formula shows up as a failure.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from tasks.classification import ImageClassifier
from tasks.regression import regression_loss
from zoo.layers import (
    BasicBlock,
    Bottleneck,
    Inception,
    conv_output_size,
    init_weights,
    nin_block,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Everything here is tiny: one intra-op thread avoids scheduling overhead on a busy machine
    (500 Adam steps on XOR take ~0.2 s on one thread and several seconds on two contended ones)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# 1. Regression losses (d2l 3.1.1 squared loss; L1 and Huber, d2l 3.3 exercises)
# --------------------------------------------------------------------------------------------


def test_l2_loss_is_half_mean_squared_residual():
    """d2l 3.1.1: l(w, b) = 1/n sum 1/2 (y_hat - y)^2."""
    g = torch.Generator().manual_seed(0)
    prediction = torch.randn(32, 1, generator=g)
    target = torch.randn(32, generator=g)  # [B] against [B, 1]: the loss reshapes the target
    r = prediction.squeeze(1) - target
    expected = sum(float(v) ** 2 / 2 for v in r) / len(r)
    assert regression_loss(prediction, target, "l2").item() == pytest.approx(expected, rel=1e-6)
    # "l2" is the default loss
    assert regression_loss(prediction, target).item() == pytest.approx(expected, rel=1e-6)


def test_l2_loss_gradient_is_residual_over_n():
    """d2l 3.1.1: the 1/2 makes the gradient of the squared loss the residual itself."""
    g = torch.Generator().manual_seed(1)
    prediction = torch.randn(5, 4, generator=g, requires_grad=True)
    target = torch.randn(5, 4, generator=g)
    regression_loss(prediction, target, "l2").backward()
    expected = (prediction.detach() - target) / prediction.numel()
    torch.testing.assert_close(prediction.grad, expected, rtol=1e-6, atol=1e-7)


def test_l1_loss_is_mean_absolute_residual():
    g = torch.Generator().manual_seed(2)
    prediction = torch.randn(40, generator=g)
    target = torch.randn(40, generator=g)
    expected = sum(abs(float(p) - float(t)) for p, t in zip(prediction, target, strict=True)) / 40
    assert regression_loss(prediction, target, "l1").item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("delta", [0.5, 2.0])
def test_huber_loss_quadratic_inside_linear_outside(delta):
    """Huber (1964): r^2/2 for |r| <= delta, delta * (|r| - delta/2) beyond."""
    g = torch.Generator().manual_seed(3)
    prediction = 3 * torch.randn(200, generator=g)
    target = torch.zeros(200)
    r = [float(v) for v in prediction]
    assert any(abs(v) <= delta for v in r) and any(abs(v) > delta for v in r)
    per_example = [v * v / 2 if abs(v) <= delta else delta * (abs(v) - delta / 2) for v in r]
    expected = sum(per_example) / len(per_example)
    got = regression_loss(prediction, target, "huber", delta=delta).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_huber_loss_matches_l2_for_small_residuals_and_l1_slope_for_large():
    small = torch.tensor([0.1, -0.2, 0.3])
    zeros = torch.zeros(3)
    assert regression_loss(small, zeros, "huber", delta=1.0).item() == pytest.approx(
        regression_loss(small, zeros, "l2").item(), rel=1e-6
    )
    large = torch.tensor([10.0, -20.0], requires_grad=True)
    regression_loss(large, torch.zeros(2), "huber", delta=1.5).backward()
    # Outside delta the slope is delta * sign(r), divided by N for the mean.
    torch.testing.assert_close(large.grad, torch.tensor([1.5, -1.5]) / 2)


def test_unknown_regression_loss_raises():
    with pytest.raises(ValueError):
        regression_loss(torch.zeros(3), torch.zeros(3), "l3")


# --------------------------------------------------------------------------------------------
# 2. Softmax cross-entropy gradient (d2l 4.1.2.4)
# --------------------------------------------------------------------------------------------


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    """d2l 4.1.2.4: d l(y, y_hat) / d o_j = softmax(o)_j - y_j."""
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 5, generator=g, requires_grad=True)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    F.cross_entropy(logits, labels, reduction="sum").backward()
    o = logits.detach()
    softmax = o.exp() / o.exp().sum(dim=1, keepdim=True)
    onehot = torch.zeros(6, 5)
    onehot[torch.arange(6), labels] = 1.0
    torch.testing.assert_close(logits.grad, softmax - onehot, rtol=1e-5, atol=1e-6)


def test_softmax_regression_task_gradient_is_softmax_minus_onehot():
    """Through ImageClassifier(model="softmax_regression"): o = Wx + b, so dL/db = sum(softmax - y)
    and dL/dW = (softmax - y)^T x (d2l 4.1.2.4)."""
    torch.manual_seed(5)
    task = ImageClassifier(model="softmax_regression", num_classes=10, in_channels=1)
    x = torch.randn(8, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 9, 9, 5, 7])
    logits = task(x)
    F.cross_entropy(logits, y, reduction="sum").backward()
    o = logits.detach()
    softmax = o.exp() / o.exp().sum(dim=1, keepdim=True)
    onehot = torch.zeros(8, 10)
    onehot[torch.arange(8), y] = 1.0
    fc = task.model.fc
    assert isinstance(fc, nn.Linear) and fc.in_features == 28 * 28
    torch.testing.assert_close(fc.bias.grad, (softmax - onehot).sum(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        fc.weight.grad, (softmax - onehot).T @ x.flatten(1), rtol=1e-4, atol=1e-4
    )


# --------------------------------------------------------------------------------------------
# 3. Inverted dropout (d2l 5.6)
# --------------------------------------------------------------------------------------------


def _dropouts(model: nn.Module) -> list[nn.Dropout]:
    return [m for m in model.modules() if isinstance(m, nn.Dropout)]


def test_mlp_dropout_is_inverted_dropout():
    """d2l 5.6: h' = 0 with probability p, else h / (1 - p), so E[h'] = h; identity at test time."""
    model = zoo.create_model("mlp", hidden_sizes=[64], dropout=0.5, in_channels=1)
    (dropout,) = _dropouts(model)
    p = 0.5
    assert dropout.p == p
    torch.manual_seed(6)
    x = torch.full((200_000,), 3.0)
    dropout.train()
    out = dropout(x)
    assert out.mean().item() == pytest.approx(3.0, rel=0.01)
    survivors = out[out != 0]
    torch.testing.assert_close(survivors, torch.full_like(survivors, 3.0 / (1 - p)))
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.01)
    dropout.eval()
    assert torch.equal(dropout(x), x)
    # The whole network is deterministic in eval mode.
    model.eval()
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(images), model(images))


def test_mlp_dropout_list_goes_to_hidden_layers_in_order():
    model = zoo.create_model("mlp", dropout=[0.1, 0.2], hidden_sizes=[8, 8])
    assert [d.p for d in _dropouts(model)] == [0.1, 0.2]
    assert isinstance(model.features.hidden1[-1], nn.Dropout)
    assert model.features.hidden1[-1].p == 0.1
    assert model.features.hidden2[-1].p == 0.2


def test_mlp_dropout_validation():
    with pytest.raises(ValueError):
        zoo.create_model("mlp", dropout=[0.1], hidden_sizes=[8, 8])
    with pytest.raises(ValueError):
        zoo.create_model("mlp", dropout=1.0, hidden_sizes=[8])


# --------------------------------------------------------------------------------------------
# 4. Output size of convolution and pooling (d2l 7.3)
# --------------------------------------------------------------------------------------------

_GRID = [
    (n, k, s, p)
    for n in (5, 28, 33, 224)
    for k in (1, 3, 5, 7, 11)
    for s in (1, 2, 4)
    for p in (0, 1, 2, 3)
    if k <= n + 2 * p
]


def test_conv_output_size_formula():
    """d2l 7.3.2: floor((n_h - k_h + p_h + s_h) / s_h) with p_h = 2p total padding."""
    for n, k, s, p in _GRID:
        expected = (n + 2 * p - k + s) // s  # the course's form of floor((n + 2p - k)/s) + 1
        assert conv_output_size(n, k, s, p) == expected, (n, k, s, p)
    assert conv_output_size(28, 5) == 24  # defaults: stride 1, no padding
    assert conv_output_size(28, 5, padding=2) == 28


@pytest.mark.parametrize("n", [5, 28, 33, 224])
def test_conv_output_size_matches_pytorch(n):
    x = torch.zeros(1, 1, n, n)
    checked_pool = 0
    for n_, k, s, p in _GRID:
        if n_ != n:
            continue
        expected = conv_output_size(n, k, s, p)
        conv = nn.Conv2d(1, 1, k, stride=s, padding=p, bias=False)
        with torch.no_grad():
            assert conv(x).shape[-2:] == (expected, expected), ("conv", n, k, s, p)
        if p <= k / 2:  # PyTorch rejects pooling windows padded by more than half
            pool = nn.MaxPool2d(k, stride=s, padding=p)
            assert pool(x).shape[-2:] == (expected, expected), ("pool", n, k, s, p)
            checked_pool += 1
    assert checked_pool > 0


# --------------------------------------------------------------------------------------------
# 5. 1x1 convolution = dense layer per pixel (d2l 7.4.3)
# --------------------------------------------------------------------------------------------


def test_1x1_convolution_is_a_per_pixel_dense_layer():
    torch.manual_seed(7)
    c_in, c_out = 5, 7
    conv = nn.Conv2d(c_in, c_out, kernel_size=1)
    x = torch.randn(3, c_in, 6, 4)
    with torch.no_grad():
        got = conv(x)
        w = conv.weight.reshape(c_out, c_in)
        expected = torch.einsum("oi,bihw->bohw", w, x) + conv.bias[None, :, None, None]
        # The same as d2l's corr2d_multi_in_out_1x1: reshape to [c_in, h*w] and matmul.
        as_matmul = (w @ x.reshape(3, c_in, -1) + conv.bias[:, None]).reshape(3, c_out, 6, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, as_matmul, rtol=1e-5, atol=1e-5)


def test_nin_block_ends_with_two_1x1_convolutions():
    """d2l 8.3.1: a conv, then two 1x1 convs (each followed by ReLU)."""
    block = nin_block(3, 96, kernel_size=11, stride=4, padding=0)
    convs = [m for m in block if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    assert convs[1].kernel_size == (1, 1) and convs[2].kernel_size == (1, 1)
    assert [type(m) for m in block][1::2] == [nn.ReLU] * 3
    assert block(torch.randn(1, 3, 224, 224)).shape == (1, 96, 54, 54)


# --------------------------------------------------------------------------------------------
# 6. Xavier and Kaiming initialisation (d2l 5.4.2.3)
# --------------------------------------------------------------------------------------------

N_IN, N_OUT = 400, 600


def _initialised(scheme: str, seed: int = 8) -> nn.Linear:
    torch.manual_seed(seed)
    return init_weights(nn.Linear(N_IN, N_OUT), scheme)


def test_xavier_normal_variance():
    """d2l 5.4.2.3: Var[w] = 2 / (n_in + n_out), mean zero."""
    layer = _initialised("xavier_normal")
    w = layer.weight.detach()
    assert w.shape == (N_OUT, N_IN)
    assert w.var().item() == pytest.approx(2 / (N_IN + N_OUT), rel=0.05)
    assert abs(w.mean().item()) < 1e-3
    assert torch.equal(layer.bias.detach(), torch.zeros(N_OUT))


def test_xavier_uniform_bounds_and_variance():
    """d2l 5.4.2.3: U(-sqrt(6/(n_in+n_out)), +sqrt(6/(n_in+n_out))) has variance 2/(n_in+n_out)."""
    layer = _initialised("xavier_uniform")
    w = layer.weight.detach()
    bound = math.sqrt(6 / (N_IN + N_OUT))
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound  # it fills the interval, not a narrower one
    assert w.var().item() == pytest.approx(2 / (N_IN + N_OUT), rel=0.05)
    assert torch.equal(layer.bias.detach(), torch.zeros(N_OUT))


def test_kaiming_variance():
    """He et al. (2015): Var[w] = 2 / n_in for ReLU networks."""
    layer = _initialised("kaiming")
    w = layer.weight.detach()
    assert w.var().item() == pytest.approx(2 / N_IN, rel=0.05)
    assert abs(w.mean().item()) < 0.01
    assert torch.equal(layer.bias.detach(), torch.zeros(N_OUT))


def test_default_init_leaves_weights_untouched():
    torch.manual_seed(9)
    layer = nn.Linear(N_IN, N_OUT)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    assert init_weights(layer, "default") is layer
    assert torch.equal(layer.weight.detach(), weight)
    assert torch.equal(layer.bias.detach(), bias)


def test_unknown_init_scheme_raises():
    with pytest.raises(ValueError):
        init_weights(nn.Linear(2, 2), "glorot")


def test_init_argument_reaches_the_model():
    torch.manual_seed(10)
    model = zoo.create_model("lenet", init="xavier_normal")
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 5  # 2 convs, 3 dense layers
    for layer in layers:
        assert torch.equal(layer.bias.detach(), torch.zeros_like(layer.bias)), layer
    # and the weights follow Xavier's variance (the first dense layer has 400 x 120 weights)
    dense = next(m for m in model.modules() if isinstance(m, nn.Linear))
    assert dense.weight.var().item() == pytest.approx(2 / (400 + 120), rel=0.1)


# --------------------------------------------------------------------------------------------
# 7. The perceptron cannot fit XOR; one hidden layer can (d2l 5.1.1)
# --------------------------------------------------------------------------------------------

XOR_X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = torch.tensor([0, 1, 1, 0])


def _xor_accuracy(model: nn.Module, steps: int = 500) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(XOR_X), XOR_Y).backward()
        optimizer.step()
    with torch.no_grad():
        return (model(XOR_X).argmax(1) == XOR_Y).float().mean().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perceptron_cannot_fit_xor(seed):
    """No line separates XOR: a linear classifier gets at most 3 of the 4 points right."""
    torch.manual_seed(seed)
    model = zoo.create_model("perceptron")
    assert [type(m) for m in model.modules() if len(list(m.children())) == 0].count(nn.Linear) == 1
    assert _xor_accuracy(model) <= 0.75


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp_with_one_hidden_layer_fits_xor(seed):
    torch.manual_seed(seed)
    model = zoo.create_model(
        "mlp", in_channels=2, image_size=1, hidden_sizes=[8], activation="tanh", num_classes=2
    )
    assert _xor_accuracy(model) == 1.0


# --------------------------------------------------------------------------------------------
# 8. Residual blocks (d2l 8.6)
# --------------------------------------------------------------------------------------------


def test_basic_block_with_zero_residual_is_relu_of_input():
    """d2l 8.6.1: f(x) = g(x) + x; with g = 0 the block outputs relu(0 + x)."""
    torch.manual_seed(11)
    block = BasicBlock(16, 16)
    assert block.downsample is None
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
    block.eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x.clamp(min=0), rtol=0, atol=0)


def test_basic_block_with_stride_projects_the_shortcut():
    """d2l 8.6.2: when the shape changes, a 1x1 conv (stride s) brings x to it."""
    block = BasicBlock(64, 128, stride=2)
    assert block(torch.randn(2, 64, 32, 32)).shape == (2, 128, 16, 16)
    projection = [m for m in block.downsample.modules() if isinstance(m, nn.Conv2d)]
    assert len(projection) == 1
    assert projection[0].kernel_size == (1, 1) and projection[0].stride == (2, 2)
    assert (projection[0].in_channels, projection[0].out_channels) == (64, 128)


def test_bottleneck_keeps_channels_without_projection():
    """d2l 8.6.5: 1x1 reduce, 3x3, 1x1 expand by 4; 256 -> 64 -> 256 needs no projection."""
    block = Bottleneck(256, 64)
    assert block.downsample is None
    assert [block.conv1.kernel_size, block.conv2.kernel_size, block.conv3.kernel_size] == [
        (1, 1),
        (3, 3),
        (1, 1),
    ]
    assert block(torch.randn(1, 256, 8, 8)).shape == (1, 256, 8, 8)


# --------------------------------------------------------------------------------------------
# 9. Inception block (d2l 8.4.1)
# --------------------------------------------------------------------------------------------


def test_inception_block_channels_and_branches():
    c1, c2, c3, c4 = 64, (96, 128), (16, 32), 32  # GoogLeNet's inception (3a)
    block = Inception(192, c1, c2, c3, c4)
    out = block(torch.randn(2, 192, 7, 9))
    assert out.shape == (2, c1 + c2[1] + c3[1] + c4, 7, 9)
    assert block.out_channels == 256

    def kernels(branch: nn.Module) -> list[tuple[str, int]]:
        return [
            (
                type(m).__name__,
                m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0],
            )
            for m in branch
            if isinstance(m, (nn.Conv2d, nn.MaxPool2d))
        ]

    assert kernels(block.branch1) == [("Conv2d", 1)]
    assert kernels(block.branch2) == [("Conv2d", 1), ("Conv2d", 3)]
    assert kernels(block.branch3) == [("Conv2d", 1), ("Conv2d", 5)]
    assert kernels(block.branch4) == [("MaxPool2d", 3), ("Conv2d", 1)]


# --------------------------------------------------------------------------------------------
# 10. Batch normalisation in LeNet-BN (d2l 8.5)
# --------------------------------------------------------------------------------------------


def test_lenet_bn_first_batch_norm_standardises_each_channel():
    """d2l 8.5.1: in training, BN(x) = gamma * (x - mu_B) / sigma_B + beta with gamma=1, beta=0."""
    torch.manual_seed(12)
    model = zoo.create_model("lenet_bn")
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    captured: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda module, inputs, output: captured.append(output))
    model.train()
    with torch.no_grad():
        model(torch.randn(64, 1, 28, 28))
    handle.remove()
    (out,) = captured
    assert out.shape == (64, 6, 24, 24)  # LeNet-BN's first conv is unpadded in the course
    mean = out.mean(dim=(0, 2, 3))
    var = out.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(6), rtol=0, atol=1e-5)
    torch.testing.assert_close(var, torch.ones(6), rtol=0, atol=1e-3)
