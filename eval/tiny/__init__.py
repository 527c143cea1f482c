"""Tiny random-weight models of every supported family, built offline from configs in code (tests and demos).

- :mod:`~tokpress.eval.tiny.families`: the registry (``FAMILIES``, ``MODULE_FAMILIES``, ``MOE_FAMILIES``),
  :func:`tiny_model`, :func:`make_inputs` and friends.
- :mod:`~tokpress.eval.tiny.processor`: the character-level tokenizer and processors shared by the tiny models.
- :mod:`~tokpress.eval.tiny.<family>`: one module per family with its own layout (config, inputs, processor).
"""
