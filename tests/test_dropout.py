"""data.dropout.Dropout against its slow twin (the formula with the same uniform draws) and nn.Dropout's law."""
import pytest
import torch
from dvsa.data.dropout import Dropout


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_output_and_gradient_match_the_formula_with_the_same_draws(p):
    x = torch.randn(7, 5, 33, requires_grad=True)
    g = torch.randn(7, 5, 33)
    torch.manual_seed(3)
    y = Dropout(p).train()(x)
    y.backward(g)
    torch.manual_seed(3)
    u = torch.rand(7, 5, 33)  # the twin: the same uniforms, the textbook inverted dropout
    mask = (u < 1 - p).float()
    torch.testing.assert_close(y, x.detach() * mask / (1 - p))
    torch.testing.assert_close(x.grad, g * mask / (1 - p))


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
