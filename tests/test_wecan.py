"""WE-CAN: the Wasserstein gap against a hand-computed example, gradient reversal (the critic
ascends the gap, the generators descend it), per-domain attention weights, and every recipe
learns on a small generated log."""

import pytest
import torch
from conftest import make_inputs, make_spec, shared_category_spec

from training.fitting import fit
from training.metrics import global_auc
from training.models import wecan
from training.models.registry import config_for
from training.models.wecan import RECIPES, WeCan
from training.trainer import TrainConfig, predict

SMALL = {"embedding_dim": 4, "attention_hidden": 4, "hidden": (16, 8), "critic_hidden": 8}


def model(name: str, seed: int = 0, **overrides) -> WeCan:
    torch.manual_seed(seed)
    return WeCan(make_spec(), config_for(name, **{**SMALL, **overrides}))


def test_critic_gap_is_d_c_minus_each_domains_d_d():
    net = model("we_can")
    del net.critic  # f_w reads the first coordinate instead: hand-checkable
    net.critic = lambda features: features[:, :1]
    # Unit vectors (the critic reads normalised features); first coordinates in comments.
    shared = torch.tensor([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6], [-1, 0]])  # 1 .6 0 .8 -1
    private = torch.tensor([[0, 1], [1, 0], [0.6, 0.8], [-0.6, 0.8], [0, 1]])  # 0 1 .6 -.6 0
    domain = torch.tensor([0, 0, 1, 2, 2])  # domain 0 has the most rows: the source
    # D_c: the source's mean 0.8 against domain 1 (0) and domain 2 (-0.1): 0.8 + 0.9 = 1.7.
    # D_d: domain 0: 0.8 - 0.5, domain 1: 0 - 0.6, domain 2: -0.1 - (-0.3); sum -0.1.
    assert net.critic_gap(shared, private, domain).item() == pytest.approx(1.7 - (-0.1))
    longer = net.critic_gap(3 * shared, 5 * private, domain)  # scale cannot grow the gap
    assert longer.item() == pytest.approx(1.8)


def test_gradient_reversal_trains_the_critic_up_and_the_generators_down(monkeypatch):
    net = model("we_can", wasserstein_weight=0.5).train()
    net.critic.eval()  # spectral norm's σ fixed: no power iteration between the two passes
    inputs = make_inputs(make_spec(), 64, 64, seed=1)
    critic = [p for p in net.critic.parameters()]
    shared_net = list(net.networks[0].parameters())

    penalty = net(inputs).penalties["wasserstein"]
    from_penalty = torch.autograd.grad(penalty, critic + shared_net, allow_unused=True)

    monkeypatch.setattr(wecan.GradientReversal, "apply", lambda x: x)  # the plain gap
    request, item = net.inputs(inputs)
    fields = torch.cat([request, item], dim=1)
    domain = net.domain(inputs, 64)
    x = (fields * net.field_weights(fields, domain).unsqueeze(2)).flatten(1)
    private = torch.stack([n(x) for n in net.networks[1:]], 1)[torch.arange(64), domain]
    gap = net.critic_gap(net.networks[0](x), private, domain)
    from_gap = torch.autograd.grad(gap, critic + shared_net)

    for got, plain in zip(from_penalty[: len(critic)], from_gap[: len(critic)]):
        assert torch.allclose(got, -0.5 * plain, atol=1e-6)  # descent on -λ·gap: critic ascends
    for got, plain in zip(from_penalty[len(critic) :], from_gap[len(critic) :]):
        assert torch.allclose(got, 0.5 * plain, atol=1e-6)  # reversed: generators descend
    assert any(g.abs().sum() > 0 for g in from_gap[len(critic) :])


def test_each_domain_weighs_the_fields_with_its_own_attention_unit():
    net = model("can", seed=3).eval()
    inputs = make_inputs(make_spec(), 8, 8, seed=2)
    request, item = net.inputs(inputs)
    fields = torch.cat([request, item], dim=1)
    weights = [net.field_weights(fields, torch.full((8,), d)) for d in range(net.domains)]
    assert weights[0].shape == (8, len(net.inputs.fields))
    assert all(((w > 0) & (w < 1)).all() for w in weights)
    assert not torch.allclose(weights[1], weights[2])


def test_the_category_match_field_is_its_vector_exactly_where_the_item_is_in_the_query_category():
    spec = shared_category_spec()
    torch.manual_seed(0)
    net = WeCan(spec, config_for("can", **SMALL)).eval()
    assert net.inputs.fields[-1] == "category_match"
    inputs = make_inputs(spec, requests=6, items=6)
    inputs["request_cat"][:, 0] = torch.tensor([3, 4, 0, 5, 6, 3])  # 0: the OOV index
    inputs["item_cat"][:, 1] = torch.tensor([1, 1, 0, 11, 4, 2])  # item vocab is query's shifted
    _, item = net.inputs(inputs)
    matched = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert torch.equal(item[:, -1], matched[:, None] * net.inputs.match)
    plain = WeCan(spec, config_for("can", category_match=False, **SMALL))
    assert len(plain.inputs.fields) == len(net.inputs.fields) - 1


def test_without_a_critic_there_is_no_penalty():
    out = model("can").train()(make_inputs(make_spec(), 16, 16))
    assert out.penalties == {}


@pytest.fixture(scope="module")
def click_log(small_log_dir):
    from training.fitting import prepare

    return prepare(small_log_dir, progress=False)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_beats_a_constant_predictor(name, click_log):
    torch.set_num_threads(1)
    options = {"hidden": (32, 16), "embedding_dim": 8}
    trained, _ = fit(click_log, name, options, TrainConfig(epochs=1, lr=3e-3, batch_size=512),
                     progress=False)  # fmt: skip
    auc = global_auc(click_log.test.labels[:, 0].numpy(), predict(trained, click_log.test)[:, 0])
    assert auc > 0.6, auc  # a constant score has AUC 0.5; the test split has ~330 clicks


def test_domain_balanced_weights_make_each_domain_weigh_the_same():
    from training.models.protocol import Ranker
    from training.models.wecan import domain_balanced_weights
    from training.trainer import task_objective

    domain = torch.tensor([0, 0, 0, 2])
    weights = domain_balanced_weights(domain)
    assert torch.allclose(weights, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2]))
    logits, labels = (
        torch.tensor([[0.5], [-1.0], [2.0], [0.3]]),
        torch.tensor([[1.0], [0], [1], [0]]),
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    per_domain_mean = (bce[:3].mean() + bce[3:].mean()) / 2  # eq. 3 without its constant 1/2
    objective, _ = task_objective(Ranker(), logits, labels, weights)  # the default hooks
    assert objective.item() == pytest.approx(per_domain_mean.item())
