"""dvsa.data.training (the toolkit the aligner and the generators share) against the obvious formulas, and the
fp32 reductions of the aligner's loss when the network's forward returns bf16 (as under AMP)."""
import json
import math

import pytest
import torch
from dvsa.data import distributed, training
from dvsa.data.checkpoint import rng_state


@pytest.mark.parametrize("epoch", [0, 1, 4, 9, 10, 12])
def test_schedules_match_the_formulas(epoch):
    base, epochs = 0.1, 10
    assert training.scheduled_lr(base, "none", epoch, epochs) == base
    assert training.scheduled_lr(base, "step", epoch, epochs, 3, 0.5) == base * 0.5 ** (epoch // 3)
    cos = base * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    assert training.scheduled_lr(base, "cosine", epoch, epochs) == cos  # the aligner's: not clamped
    clamped = base * 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))
    assert training.scheduled_lr(base, "cosine", epoch, epochs, clamp=True) == clamped  # the generators'


def test_optimizers_and_their_hyper_parameters():
    p = [torch.nn.Parameter(torch.zeros(3))]
    sgd = training.make_optimizer("sgd", p, lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    rms = training.make_optimizer("rmsprop", p, lr=0.1, alpha=0.95)
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["alpha"] == 0.95
    assert isinstance(training.make_optimizer("adam", p, lr=0.1), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer"):
        training.make_optimizer("lbfgs", p, lr=0.1)
    assert training.make_optimizer("adam", p, lr=0.1).defaults["fused"]
    training.set_lr(sgd, 0.5)
    assert sgd.param_groups[0]["lr"] == 0.5


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_optimizer_takes_the_steps_of_the_per_parameter_loop(name):
    """fused=True (the default) and fused=False give the same parameters after a few steps, within float rounding."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(7, 5, generator=g), torch.randn(5, generator=g)]
    grads = [[torch.randn(x.shape, generator=g) for x in start] for _ in range(4)]
    out = []
    for fused in (True, False):
        params = [torch.nn.Parameter(x.clone()) for x in start]
        opt = training.make_optimizer(name, params, lr=0.05, momentum=0.9, weight_decay=1e-2, fused=fused)
        assert bool(opt.defaults["fused"]) == fused
        for step in grads:
            for p_, gr in zip(params, step):
                p_.grad = gr.clone()
            opt.step()
        out.append(params)
    for a, b in zip(*out):
        assert not torch.equal(a, torch.zeros_like(a))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_resume_check_names_the_fields():
    training.check_resumable({"a": 1, "epochs": 3}, {"a": 1, "epochs": 5}, {"epochs"}, "x/last.pt")
    with pytest.raises(ValueError, match=r"x/last.pt: cannot resume with a different config.*other settings \(a, b\)"):
        training.check_resumable({"a": 1}, {"a": 2, "b": 0, "epochs": 5}, {"epochs"}, "x/last.pt")


def test_training_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = training.training_state(model, opt, 3, 17)
    assert set(state) == {"model", "optimizer", "epoch", "step", "rng"}
    want = torch.rand(2)
    other = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    assert training.restore_training_state(state, other, opt2) == (3, 17)
    assert torch.equal(torch.rand(2), want)  # the RNG continues where the state was taken
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert "cuda" not in rng_state() or torch.cuda.is_initialized()


def test_run_files_are_json(tmp_path):
    training.write_config(tmp_path, {"lr": 0.1})
    training.write_history(tmp_path, [{"epoch": 1, "loss": 2.5}])
    assert json.loads((tmp_path / "config.json").read_text()) == {"lr": 0.1}
    assert json.loads((tmp_path / "history.json").read_text())[0]["loss"] == 2.5
    assert not list(tmp_path.glob("*.tmp*"))


def test_devices_and_backends_on_the_cpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    assert distributed.backend_for("cpu") == "gloo"
    assert not distributed.init_process_group("cpu")  # no launcher: a single process
    assert training.setup_device("cpu") == torch.device("cpu")
    assert not training.amp_enabled(True, torch.device("cpu"))
    with training.autocast(torch.device("cpu"), True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # AMP on the CPU only with cpu=True
    m = torch.nn.Linear(2, 2)
    assert training.wrap_ddp(m, torch.device("cpu")) is m
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no GPU"):
            distributed.resolve_device("cuda")
    with pytest.raises(FloatingPointError, match="epoch 2 step 5"):
        training.check_finite(float("nan"), 1, 5)


def test_cpu_bf16_only_when_asked_and_native(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    assert training.amp_enabled(True, cpu, cpu=True) and not training.amp_enabled(True, cpu)
    assert not training.amp_enabled(False, cpu, cpu=True) and training.amp_enabled(True, cuda)
    with training.autocast(cpu, True, cpu=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    monkeypatch.setattr(training, "cpu_has_bf16", lambda: False)  # emulated bf16 is slower: plain fp32
    assert not training.amp_enabled(True, cpu, cpu=True)


def test_bf16_steps_on_the_cpu_give_the_fp32_losses_within_bf16_rounding(monkeypatch):
    """cpu_amp: the aligner's and the generator's batch losses under CPU bf16 autocast (forced here, so it runs on
    any CPU) against the same fp32 step; bf16 keeps 8 bits of mantissa, so 3% is many rounding errors wide."""
    import dvsa.align.train as align_train
    from dvsa.align.model import AlignConfig, AlignmentModel
    from dvsa.data.text import END_ID, START_ID
    from dvsa.generate.model import CaptionModel, GenConfig, caption_loss

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    cfg = AlignConfig(embed_dim=32, hidden_dim=16, word_dim=8, dropout=0.0)
    model = AlignmentModel(cfg, 30, 12).eval()
    batch = {"feats": torch.rand(6, 4, 12, generator=g), "rmask": torch.ones(6, 4, dtype=torch.bool),
             "tokens": torch.randint(1, 30, (6, 5), generator=g), "lengths": torch.full((6,), 5),
             "image": torch.arange(6)}
    fp32 = align_train.batch_loss(model, cfg, batch, cpu)
    bf16 = align_train.batch_loss(model, AlignConfig(**{**vars(cfg), "cpu_amp": True}), batch, cpu)
    assert bf16.dtype == torch.float32 and fp32.item() > 0
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.03)
    gen = CaptionModel(GenConfig(hidden=32, embed=16, dropout=0.0), 30, 12).eval()
    feats = torch.rand(5, gen.input_dim, generator=g)
    words = torch.randint(4, 30, (5, 6), generator=g)
    inp = torch.cat([torch.full((5, 1), START_ID), words[:, :-1]], 1)
    tgt = torch.cat([words[:, :-1], torch.full((5, 1), END_ID)], 1)
    losses = []
    for on in (False, True):
        with training.autocast(cpu, True, cpu=on):
            logits = gen(feats, inp, targets=tgt)
        losses.append(caption_loss(logits.float(), tgt).item())
    assert losses[1] == pytest.approx(losses[0], rel=0.03)


def test_aligner_reduces_in_fp32_when_the_forward_is_bf16(monkeypatch):
    """Under AMP the network's outputs are bf16: the scores (sums over words and regions) and the loss are fp32."""
    import dvsa.align.train as train_mod
    from dvsa.align.model import AlignConfig, AlignmentModel

    seen = []
    real = train_mod.image_sentence_scores
    monkeypatch.setattr(train_mod, "image_sentence_scores",
                        lambda v, rmask, s, *a, **k: seen.append((v.dtype, s.dtype, k["dot_dtype"]))
                        or real(v, rmask, s, *a, **k))
    cfg = AlignConfig(embed_dim=8, hidden_dim=8, word_dim=8, dropout=0.0)
    model = AlignmentModel(cfg, 10, 6)
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a: tuple(x.bfloat16() for x in forward(*a)))
    batch = {"feats": torch.randn(4, 3, 6), "rmask": torch.ones(4, 3, dtype=torch.bool),
             "tokens": torch.randint(1, 10, (4, 5)), "lengths": torch.full((4,), 5), "image": torch.arange(4)}
    loss = train_mod.batch_loss(model, cfg, batch, torch.device("cpu"))
    # eq. 8's dot products stay bf16 (of bf16 values: `image_sentence_scores`' dot_dtype), every sum is fp32
    assert seen == [(torch.float32, torch.float32, torch.bfloat16)] and loss.dtype == torch.float32
    monkeypatch.setattr(model, "forward", forward)
    train_mod.batch_loss(model, cfg, batch, torch.device("cpu"))
    assert seen[1] == (torch.float32, torch.float32, None)  # an fp32 forward: fp32 products


def test_feature_standardisation_is_skipped_while_it_is_the_identity():
    from dvsa.data.standardize import standardize

    x = torch.randn(3, 4, 5)
    assert standardize(x, torch.zeros(5), torch.ones(5)) is x  # no pass over the inputs
    mean, scale = torch.randn(5), torch.rand(5) + 0.5
    torch.testing.assert_close(standardize(x, mean, scale), (x - mean) * scale)
    torch.testing.assert_close(standardize(x, torch.zeros(5), scale), x * scale)
    torch.testing.assert_close(standardize(x, mean, torch.ones(5)), x - mean)


def test_the_cpu_allocator_keeps_freed_memory_where_the_c_library_allows():
    """glibc's mallopt takes both settings (True); elsewhere the call is a no-op that says False."""
    import platform

    ok = training.retain_freed_memory()
    assert isinstance(ok, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert ok


def test_lent_threads_come_back_between_steps_once_the_borrower_ends():
    before = torch.get_num_threads()
    ended = []
    training.lend_threads(1, lambda: bool(ended), restore=before + 1)
    assert torch.get_num_threads() == 1
    training.reclaim_threads()
    assert torch.get_num_threads() == 1  # still running beside
    ended.append(True)
    training.reclaim_threads()
    assert torch.get_num_threads() == before + 1
    training.reclaim_threads()  # nothing lent any more: a no-op
    training.end_lending(before)
    assert torch.get_num_threads() == before
