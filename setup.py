"""tokpress packaging. ``patches/`` and ``eval/`` install inside the ``tokpress`` namespace."""

from setuptools import setup

setup(
    packages=[
        "tokpress",
        "tokpress.ops",
        "tokpress.policies",
        "tokpress.policies.outer",
        "tokpress.policies.inner",
        "tokpress.patches",
        "tokpress.eval",
    ],
    package_dir={"tokpress": "tokpress", "tokpress.patches": "patches", "tokpress.eval": "eval"},
    package_data={
        "tokpress": ["py.typed"],
        "tokpress.eval": ["archs/*.json", "models/tokpress-synth-qwen2.5-vl/*"],
    },
)
