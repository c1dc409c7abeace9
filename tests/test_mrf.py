"""The batched Viterbi of align/mrf.py against brute-force enumeration of all M^N assignments."""
import itertools

import pytest
import torch
from dvsa.align.mrf import argmax_assign, chain_mrf, runs, snippet_counts


def brute_force(u: torch.Tensor, n: int, regions: list[int], beta: float) -> tuple[list[int], float]:
    """Best assignment of words 0..n-1 to `regions` by enumeration; ties -> smallest (a_N, ..., a_1)."""
    if n == 0:
        return [], 0.0
    best_key, best_a, best_e = None, None, None
    for a in itertools.product(regions, repeat=n):
        e = sum(float(u[j, a[j]]) for j in range(n)) + beta * sum(a[j] == a[j + 1] for j in range(n - 1))
        key = (-e, tuple(reversed(a)))
        if best_key is None or key < best_key:
            best_key, best_a, best_e = key, list(a), e
    return best_a, best_e


def random_case(g: torch.Generator, B: int, T: int, R: int, integer: bool):
    if integer:  # small integers: many exact ties, sums exact in float64
        u = torch.randint(-2, 3, (B, T, R), generator=g).double()
    else:
        u = torch.randn(B, T, R, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    mask = torch.rand(B, R, generator=g) < 0.7
    mask[torch.arange(B), torch.randint(0, R, (B,), generator=g)] = True  # >= 1 real region
    # garbage at padded words / masked regions must be ignored
    pos = torch.arange(T)[None, :, None] >= lengths[:, None, None]
    u = torch.where(pos | ~mask[:, None, :], torch.full_like(u, 100.0), u)
    return u, lengths, mask


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 2.0, 50.0])
@pytest.mark.parametrize("integer", [False, True])
def test_viterbi_matches_brute_force(beta, integer):
    g = torch.Generator().manual_seed(int(beta * 10) + 7 * integer)
    for T, R in [(1, 1), (3, 2), (5, 4), (4, 3), (5, 1)]:
        u, lengths, mask = random_case(g, 12, T, R, integer)
        res = chain_mrf(u, lengths, mask, beta)
        assert res.assign.shape == (12, T) and res.score.shape == (12,)
        for b in range(12):
            regions = [i for i in range(R) if mask[b, i]]
            a, e = brute_force(u[b], int(lengths[b]), regions, beta)
            n = int(lengths[b])
            assert res.assign[b, :n].tolist() == a, (T, R, b, u[b], lengths[b], mask[b])
            assert (res.assign[b, n:] == -1).all()
            assert float(res.score[b]) == pytest.approx(e, abs=1e-9)


def test_per_pair_beta_and_float32():
    g = torch.Generator().manual_seed(3)
    u, lengths, mask = random_case(g, 10, 5, 4, integer=False)
    betas = torch.linspace(0, 3, 10)
    res = chain_mrf(u.float(), lengths, mask, betas)
    for b in range(10):
        one = chain_mrf(u[b : b + 1].float(), lengths[b : b + 1], mask[b : b + 1], float(betas[b]))
        assert torch.equal(res.assign[b], one.assign[0])
        a, _ = brute_force(u[b], int(lengths[b]), [i for i in range(4) if mask[b, i]], float(betas[b]))
        assert res.assign[b, : int(lengths[b])].tolist() == a


def test_extremes_of_beta():
    g = torch.Generator().manual_seed(5)
    u = torch.randn(20, 7, 6, generator=g)
    lengths = torch.full((20,), 7)
    # beta = 0 is the per-word argmax
    assert torch.equal(argmax_assign(u, lengths), u.argmax(-1))
    # a huge beta puts the whole sentence on the region with the largest total
    whole = chain_mrf(u, lengths, None, 1e4).assign
    assert torch.equal(whole, u.sum(1).argmax(-1)[:, None].expand(20, 7))


def test_ties_are_deterministic_and_all_zero_scores():
    u = torch.zeros(2, 4, 3)
    res = chain_mrf(u, torch.tensor([4, 2]), torch.tensor([[False, True, True], [True, True, True]]), 1.0)
    assert res.assign.tolist() == [[1, 1, 1, 1], [0, 0, -1, -1]]
    assert res.score.tolist() == [3.0, 1.0]


def test_bad_inputs():
    u = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="beta"):
        chain_mrf(u, torch.tensor([2]), None, -1.0)
    with pytest.raises(ValueError, match="region"):
        chain_mrf(u, torch.tensor([2]), torch.zeros(1, 2, dtype=torch.bool), 0.0)
    with pytest.raises(ValueError, match="lengths"):
        chain_mrf(u, torch.tensor([3]), None, 0.0)


def test_runs_and_counts():
    assert runs([2, 2, 0, 0, 0, 1, -1], 6) == [(0, 2, 2), (2, 5, 0), (5, 6, 1)]
    assert runs([], 0) == []
    assign = torch.tensor([[2, 2, 0, -1], [1, 1, 1, 1], [-1, -1, -1, -1]])
    assert snippet_counts(assign, torch.tensor([3, 4, 0])) == (7, 3)
