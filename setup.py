"""tokpress packaging. ``patches/`` and ``eval/`` install inside the ``tokpress`` namespace."""

from setuptools import setup

setup(
    packages=[
        "tokpress",
        "tokpress.ops",
        "tokpress.integrations",
        "tokpress.integrations.lmms_eval",
        "tokpress.policies",
        "tokpress.policies.outer",
        "tokpress.policies.inner",
        "tokpress.policies.vision",
        "tokpress.patches",
        "tokpress.eval",
        "tokpress.eval.accuracy",
        "tokpress.eval.accuracy.benchmarks",
        "tokpress.eval.bench",
        "tokpress.eval.synth",
        "tokpress.eval.tiny",
    ],
    package_dir={"tokpress": "tokpress", "tokpress.patches": "patches", "tokpress.eval": "eval"},
    package_data={
        "tokpress": ["py.typed"],
        "tokpress.eval": ["models/tokpress-synth-qwen2.5-vl/*"],
        "tokpress.eval.bench": ["archs/*.json"],
    },
)
