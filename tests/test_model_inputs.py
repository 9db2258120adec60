"""The input block's category-match feature and the experts' linear (wide) part."""

import pytest
import torch
from conftest import make_inputs, make_spec, shared_category_spec

from training.models.category_moe import CategoryMoE
from training.models.experts import StackedExperts
from training.models.inputs import InputBlock
from training.models.registry import config_for


def test_category_match_is_one_exactly_where_the_item_is_in_the_query_category():
    spec = shared_category_spec()
    block = InputBlock(spec, embedding_dim=4, text_proj=0, category_match=True)
    inputs = make_inputs(spec, requests=40, items=40)
    inputs["request_cat"][:5, 0] = torch.tensor([3, 4, 0, 5, 6])  # 0: the OOV index
    inputs["item_cat"][:5, 1] = torch.tensor([1, 1, 0, 11, 4])  # item vocab is query's shifted
    _, item_vec = block(inputs)
    query = ("<oov>", *spec.request_categorical[0].vocab)
    item = ("<oov-item>", *spec.item_categorical[1].vocab)
    expected = [
        float(query[q] == item[i])
        for q, i in zip(inputs["request_cat"][:, 0].tolist(), inputs["item_cat"][:, 1].tolist())
    ]
    assert item_vec[:, -1].tolist() == expected
    assert expected[:5] == [1.0, 0.0, 0.0, 0.0, 1.0]  # OOV and the never-queried never match
    assert block.item_dim == InputBlock(spec, 4, 0).item_dim + 1
    # One request (R = 1, serving) gives the rows the per-row layout gives.
    one = {**inputs, "request_cat": inputs["request_cat"][:1]}
    rows = {**inputs, "request_cat": inputs["request_cat"][:1].expand(40, -1)}
    assert torch.equal(block(one)[1], block(rows)[1])


def test_an_unread_item_field_changes_nothing_and_has_no_table():
    spec = shared_category_spec()
    first = spec.item_categorical[0].name
    block = InputBlock(spec, embedding_dim=4, text_proj=0, unread_item_fields=(first,))
    assert len(block.item_embeddings.tables) == len(spec.item_categorical) - 1
    assert block.item_dim == InputBlock(spec, 4, 0).item_dim - 4
    inputs = make_inputs(spec, requests=8, items=8)
    _, before = block(inputs)
    inputs["item_cat"][:, 0] = (inputs["item_cat"][:, 0] + 1) % spec.item_categorical[0].cardinality
    _, after = block(inputs)
    assert torch.equal(before, after)


def test_an_unknown_unread_field_is_an_error():
    with pytest.raises(ValueError, match="not among"):
        InputBlock(make_spec(), 4, 0, unread_item_fields=("colour",))


def test_linear_experts_start_as_their_towers_and_then_add_a_linear_map():
    torch.manual_seed(0)
    tower = StackedExperts(3, 5, 6, (8, 4), 1)
    wide = StackedExperts(3, 5, 6, (8, 4), 1, linear=True)
    wide.load_state_dict(tower.state_dict(), strict=False)
    request, item = torch.randn(1, 5), torch.randn(9, 6)
    assert torch.equal(wide(request, item), tower(request, item))
    with torch.no_grad():
        wide.linear_item.normal_()
        wide.linear_request.normal_()
    linear = torch.einsum("bd,edo->beo", item, wide.linear_item) + torch.einsum(
        "rd,edo->reo", request, wide.linear_request
    )
    assert torch.allclose(wide(request, item), tower(request, item) + linear, atol=1e-5)
    index = torch.tensor([2, 0])
    assert torch.allclose(wide(request, item, index), wide(request, item)[:, index], atol=1e-6)


def test_a_moe_with_both_options_skips_experts_with_the_dense_result():
    spec = shared_category_spec()
    config = config_for("moe", hidden=(16, 8), linear_experts=True, category_match=True)
    model = CategoryMoE(spec, config)
    for p in model.parameters():  # trained-looking, non-uniform gates and wide parts
        torch.nn.init.normal_(p, std=0.3)
    model.eval()
    inputs = make_inputs(spec, requests=1, items=7)
    with torch.no_grad():
        assert torch.allclose(
            model(inputs).logits, model(inputs, skip_experts=True).logits, atol=1e-5
        )


def test_a_batch_of_requests_scores_each_request_as_it_scores_alone():
    from export.serving_graph import BatchedServingGraph, ServingGraph, batched_example

    spec = shared_category_spec()
    config = config_for("moe", hidden=(16, 8), linear_experts=True, category_match=True)
    model = CategoryMoE(spec, config)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    lengths = [3, 7, 1, 5]
    alone, together = batched_example(model, spec, lengths, seed=3)
    with torch.no_grad():
        batched = BatchedServingGraph(model)(*together)[0]
        single = torch.cat([ServingGraph(model, skip_experts=True)(*a)[0] for a in alone])
    assert torch.allclose(batched, single, atol=1e-5)
