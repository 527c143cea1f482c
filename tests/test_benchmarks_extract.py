"""Answer extraction of the real benchmarks on crafted generations: each rule restated from the lmms-eval 0.7.3
task (case sensitivity, priorities, prefixes, fallbacks), expectations derived by hand."""

from __future__ import annotations

import pytest

from tokpress.eval.accuracy.benchmarks import BENCHMARKS, extract_answer
from tokpress.eval.accuracy.data import EvalSample, choice_of

FOUR = ["red", "blue", "green", "pink"]
FIVE = ["cuts onions", "reads a book", "opens a door", "washing the dishes", "walks the dog"]

CASES = [
    # Video-MME (extract_mcq_answer over A-D): case-sensitive; start/end beat "X " occurrences
    ("videomme", "(B)", FOUR, 1),
    ("videomme", "The answer is C.", FOUR, 2),
    ("videomme", "b", FOUR, -1),
    ("videomme", "no idea at all", FOUR, -1),
    ("videomme", "D. pink", FOUR, 3),
    ("videomme", "It is A or maybe B", FOUR, 1),  # "B" at the end (rank 9) beats "A " (rank 2)
    ("videomme", "", FOUR, -1),
    # MVBench (mcq_acc): any case, first standalone letter A-E after punctuation handling
    ("mvbench", "(B)", FOUR, 1),
    ("mvbench", "The answer is C.", FOUR, 2),
    ("mvbench", "b", FOUR, 1),
    ("mvbench", "xyz", FOUR, -1),
    ("mvbench", "a. red", FOUR, 0),
    ("mvbench", "E", FOUR, -1),  # a letter beyond the options
    # LongVideoBench: prefixes removed, then the first capital A-E anywhere (lmms-eval: random when none)
    ("longvideobench", "(B)", FOUR, 1),
    ("longvideobench", "The answer is C.", FOUR, 2),
    ("longvideobench", "b", FOUR, -1),
    ("longvideobench", "xyz", FOUR, -1),
    ("longvideobench", "Definitely B", FOUR, 3),  # the D of "Definitely" comes first
    # EgoSchema (MMMU-style): (X), "X " or "X." tokens, else an option's text in a longer answer
    ("egoschema", "(B)", FIVE, 1),
    ("egoschema", "The answer is C.", FIVE, 2),
    ("egoschema", "b", FIVE, -1),
    ("egoschema", "xyz", FIVE, -1),
    ("egoschema", "I believe the person is washing the dishes here", FIVE, 3),
    ("egoschema", "B. or (E)", FIVE, 1),  # several: the one whose last occurrence comes first
]


@pytest.mark.parametrize("name, text, options, expected", CASES, ids=[f"{c[0]}:{c[1]!r}" for c in CASES])
def test_extraction(name, text, options, expected):
    assert extract_answer(name, text, options) == expected


def test_samples_of_a_benchmark_use_its_extraction():
    sample = EvalSample("s", "t", "q?", FOUR, 1, video="v.mp4", extract="mvbench")
    assert choice_of(sample, "b", "letter") == 1  # MVBench reads lower-case letters
    sample.extract = "videomme"
    assert choice_of(sample, "b", "letter") == -1
    sample.extract = None
    assert choice_of(sample, "(B) blue", "letter") == 1  # tokpress' own match_answer


def test_generation_lengths_follow_lmms_eval():
    assert {k: b.max_new_tokens for k, b in BENCHMARKS.items()} == {
        "videomme": 16,
        "mvbench": 16,
        "longvideobench": 32,
        "egoschema": 16,
    }
