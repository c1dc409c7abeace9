"""align/score_cache.py: cached word-region scores equal the model's, a changed input is a new batch, and the
box-weight choice gives the rows of its uncached twin while running the model once per batch."""
import torch
from dvsa.align.boxscore import BoxPrior, choose_box_weight
from dvsa.align.grounding import evaluate_alignment
from dvsa.align.model import AlignConfig, AlignmentModel
from dvsa.align.score_cache import ScoreCache, batch_key
from dvsa.align.snippets import SnippetConfig, snippet_beta
from test_boxscore import part_world, random_scorer


class Counting:
    """A model that counts its word_region_scores calls."""

    def __init__(self, model):
        self.model, self.calls, self.training = model, 0, False

    def eval(self):
        return self

    def word_region_scores(self, *args):
        self.calls += 1
        return self.model.word_region_scores(*args)


def random_batch(seed, B=3, R=4, T=5, D=6, V=11):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, R, D, generator=g)
    mask = torch.ones(B, R, dtype=torch.bool)
    mask[0, -1] = False
    tokens = torch.randint(1, V, (B, T), generator=g)
    lengths = torch.tensor([T, 2, 3])
    boxes = torch.rand(B, R, 4, generator=g) * 50
    boxes[..., 2:] += boxes[..., :2]
    return feats, mask, tokens, lengths, boxes


def test_cached_scores_equal_the_models_and_a_changed_input_is_a_new_batch():
    model = AlignmentModel(AlignConfig(embed_dim=8, hidden_dim=8, word_dim=8, seed=0, geometry=True, geometry_bins=4), 11, 6).eval()
    cache = ScoreCache(model)
    batch = random_batch(0)
    with torch.no_grad():
        want = model.word_region_scores(*batch)
        first = cache.word_region_scores(*batch)
        first.add_(100.0)  # a caller changing its scores in place leaves the cache alone
        again = cache.word_region_scores(*batch)
        assert torch.equal(again, want) and (cache.hits, cache.misses) == (1, 1)
        for k in range(len(batch)):  # any one input changed: computed again
            other = list(batch)
            other[k] = other[k].clone()
            flat = other[k].view(-1)
            if flat.dtype == torch.bool:
                flat[1] = ~flat[1]
            elif flat.dtype == torch.long:  # a token or a length: another valid one
                flat[1] = 1 if int(flat[1]) != 1 else 2
            else:
                flat[1] += 1
            assert batch_key(*other) != batch_key(*batch)
            assert torch.equal(cache.word_region_scores(*other), model.word_region_scores(*other))
        assert (cache.hits, cache.misses) == (1, 1 + len(batch))


def test_the_box_weight_choice_equals_its_uncached_twin_and_scores_each_batch_once(tmp_path):
    records, store, model, vocab = part_world(tmp_path)
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    scorer = random_scorer(store.dim, 0)
    cfg = SnippetConfig(target_len=2.0, calib_sentences=50, batch_size=4)
    weights = (0.5, 1.0, 2.0)
    twin = []
    for w in (0.0, *weights):  # the slow twin: every weight scored from scratch
        m = BoxPrior(model, scorer, w) if w > 0 else model
        beta, _ = snippet_beta(m, vocab, store, train, cfg)
        res = evaluate_alignment(m, vocab, store, val, beta, batch_size=cfg.batch_size, progress=False)
        twin.append({"weight": w, "beta": beta, "word_accuracy": res["word_accuracy"],
                     "phrase_accuracy": res["phrase_accuracy"]})
    counting = Counting(model)
    _, rows = choose_box_weight(counting, scorer, vocab, store, train, val, weights, cfg, progress=False)
    assert rows == twin
    once = Counting(model)
    snippet_beta(once, vocab, store, train, cfg)
    evaluate_alignment(once, vocab, store, val, 0.0, batch_size=cfg.batch_size, progress=False)
    assert counting.calls == once.calls > 0  # four weights, one pass of the model
