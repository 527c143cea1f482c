"""Interleaved rounds: every round measures every row exactly once, in seeded orders that differ between rounds;
one prompt's inputs repeat to a batch size whatever their layout."""

from __future__ import annotations

import torch

from tokpress.eval.bench.rounds import rebatch, round_orders, run_rounds


def test_orders_are_permutations_that_differ_between_rounds():
    for rows in (2, 3, 7):
        orders = round_orders(rows, 12, seed=1)
        assert len(orders) == 12
        assert all(sorted(order) == list(range(rows)) for order in orders)
        assert all(a != b for a, b in zip(orders, orders[1:]))
    assert round_orders(7, 5, seed=4) == round_orders(7, 5, seed=4)  # seeded
    assert round_orders(7, 5, seed=4) != round_orders(7, 5, seed=5)
    assert round_orders(1, 3) == [[0], [0], [0]]


def test_run_rounds_measures_each_row_once_per_round():
    rows = ["none", "oracle", "a", "b", "c"]
    calls: list[str] = []
    labels: list[str] = []
    values, positions = run_rounds(rows, lambda row: calls.append(row) or f"{row}{len(calls)}", 4, 2, labels.append)
    assert labels == ["round 1/4", "round 2/4", "round 3/4", "round 4/4"]
    assert len(calls) == 4 * len(rows)
    for k in range(4):
        this_round = calls[k * len(rows) : (k + 1) * len(rows)]
        assert sorted(this_round) == sorted(rows)  # every row exactly once in round k
        assert [rows.index(row) for row in this_round] == round_orders(len(rows), 4, 2)[k]
        # positions say where each row ran; values are in round order
        assert all(this_round[positions[i][k]] == row for i, row in enumerate(rows))
    for i, row in enumerate(rows):
        assert [v.rstrip("0123456789") for v in values[i]] == [row] * 4
        assert [int(v[len(row) :]) for v in values[i]] == [k * 5 + positions[i][k] + 1 for k in range(4)]


def test_rebatch_repeats_per_sample_and_concatenated_tensors():
    ids = torch.tensor([[1, 2, 3], [1, 2, 3]])  # B = 2 identical prompts
    patches = torch.arange(8.0).reshape(4, 2).repeat(2, 1)  # Qwen: [B * 4 patches, D]
    grid = torch.tensor([[1, 2, 2], [1, 2, 2]])
    frames = torch.zeros(2, 3, 1, 2, 2)  # LLaVA: [B, F, C, H, W]
    inputs = {"input_ids": ids, "pixel_values_videos": patches, "video_grid_thw": grid, "frames": frames, "x": "k"}
    out = rebatch(inputs, 3)
    assert out["input_ids"].tolist() == [[1, 2, 3]] * 3
    assert out["pixel_values_videos"].shape == (12, 2)
    assert torch.equal(out["pixel_values_videos"][8:], torch.arange(8.0).reshape(4, 2))
    assert out["video_grid_thw"].tolist() == [[1, 2, 2]] * 3 and out["frames"].shape == (3, 3, 1, 2, 2)
    assert out["x"] == "k"
    one = rebatch(inputs, 1)
    assert one["input_ids"].tolist() == [[1, 2, 3]] and one["pixel_values_videos"].shape == (4, 2)
    assert rebatch(inputs, 2) is inputs
