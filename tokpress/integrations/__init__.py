"""Integrations of tokpress with other tools; each subpackage imports its tool only when used.

- :mod:`tokpress.integrations.lmms_eval`: model entry points for lmms-eval (``--model tokpress_qwen2_5_vl`` ...).
"""
