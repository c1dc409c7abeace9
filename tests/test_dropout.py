"""data.dropout.Dropout against its slow twin (the formula with the same draws) and nn.Dropout's law."""
import pytest
import torch
from dvsa.data.dropout import STREAM_MIN, Dropout, uniform16


@pytest.mark.parametrize("p", [0.2, 0.5])
@pytest.mark.parametrize("shape", [(7, 5, 33), (70, 30, 33)])  # torch's draws; a seeded stream (>= STREAM_MIN)
def test_output_and_gradient_match_the_formula_with_the_same_draws(p, shape):
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    torch.manual_seed(3)
    y = Dropout(p).train()(x)
    y.backward(g)
    torch.manual_seed(3)
    u = uniform16(shape).long() + 2**15  # the twin: the same draws, the textbook inverted dropout
    q = round((1 - p) * 2**16) / 2**16  # the keep rate, 1 - p to 16 bits
    mask = (u < q * 2**16).float()
    torch.testing.assert_close(y, x.detach() * mask / q)
    torch.testing.assert_close(x.grad, g * mask / q)


@pytest.mark.parametrize("n", [STREAM_MIN - 1, 4 * STREAM_MIN + 3])
def test_draws_are_uniform_and_follow_torchs_seed(n):
    """Every 16-bit value is equally likely (each of the 256 high bytes, and the low bytes, within 6 standard
    errors), successive draws differ, and torch.manual_seed fixes them."""
    torch.manual_seed(0)
    u = uniform16((n,))
    assert u.dtype == torch.int16 and u.shape == (n,)
    assert not torch.equal(u, uniform16((n,)))
    torch.manual_seed(0)
    assert torch.equal(u, uniform16((n,)))
    v = u.long() + 2**15
    for byte in (v >> 8, v & 255):
        counts = torch.bincount(byte, minlength=256).double()
        expected = n / 256
        assert float(((counts - expected).abs() / expected**0.5).max()) < 6


def test_keep_rate_and_mean_follow_nn_dropout():
    x = torch.ones(1_000_000)
    for p in (0.2, 0.5):
        ours, ref = Dropout(p).train()(x), torch.nn.Dropout(p).train()(x)
        # keep-rate standard error sqrt(p (1 - p) / n) <= 5e-4: a 0.005 margin is 10 of them
        assert abs((ours > 0).float().mean().item() - (1 - p)) < 0.005
        assert abs((ours > 0).float().mean().item() - (ref > 0).float().mean().item()) < 0.005
        torch.testing.assert_close(ours.unique(), torch.tensor([0.0, 1 / (1 - p)]))
        assert abs(ours.mean().item() - 1.0) < 0.01


def test_eval_mode_and_edge_rates():
    x = torch.randn(4, 9)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    d = Dropout(0.3)
    assert isinstance(d, torch.nn.Dropout) and d.p == 0.3 and d.state_dict() == {}
