"""tokpress as lmms-eval models: every supported family's lmms-eval wrapper, compressed from ``--model_args``.

    pip install -e ".[lmms]"
    python -m lmms_eval --model tokpress_qwen2_5_vl \\
        --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,method=holitom,retain_ratio=0.1 \\
        --tasks videomme --output_path logs/

- :mod:`~tokpress.integrations.lmms_eval.manifest`: the ``lmms_eval.models`` entry point (one
  ``ModelManifest`` per family, ids prefixed ``tokpress_`` so none shadows a built-in model).
- :mod:`~tokpress.integrations.lmms_eval.session`: the tokpress side, free of lmms-eval: parsing and checking the
  tokpress arguments, applying tokpress around each request batch and recording per-prompt statistics.
- :mod:`~tokpress.integrations.lmms_eval.models`: the wrapper classes (subclasses of lmms-eval's own wrappers).
"""
