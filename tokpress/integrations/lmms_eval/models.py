"""lmms-eval wrapper classes compressed by tokpress, one per :data:`~.manifest.WRAPPERS` entry.

Each class subclasses lmms-eval's own wrapper for the family and changes three things:

- ``__init__`` takes the tokpress keys out of ``--model_args`` and checks them against the checkpoint's config
  before the base class loads any weight;
- every request method (``generate_until``, ``loglikelihood``, ``generate_until_multi_round``) runs inside a
  :class:`~.session.PromptRecorder`: tokpress is applied for the call and removed after it;
- after each call the per-prompt token counts and times are logged with lmms-eval's ``log_metrics`` (they appear
  as ``avg_tokpress_*`` in the ``throughput`` block of lmms-eval's results) and, with ``tokpress_log=<file>``,
  appended one JSON line per prompt (``<file stem>.rank<r><suffix>`` per process under ``accelerate launch``).

Classes are built on first access (module ``__getattr__``), so requesting one family never imports another
family's lmms-eval module.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Any

from tokpress.integrations.lmms_eval.manifest import WRAPPERS, WrapperSpec
from tokpress.integrations.lmms_eval.session import PromptRecorder, TokpressArgs, check_args, split_args, summarize

logger = logging.getLogger("tokpress")

REQUEST_METHODS = ("generate_until", "loglikelihood", "generate_until_multi_round")


class TokpressWrapperMixin:
    """The tokpress behaviour shared by every wrapper; ``tokpress_spec`` names the family."""

    tokpress_spec: WrapperSpec
    tokpress_base: type
    tokpress_args: TokpressArgs

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        tp_args, rest = split_args(kwargs)
        pretrained = args[0] if args else rest.get("pretrained", _default(self.tokpress_base, "pretrained"))
        spec = self.tokpress_spec
        check_args(tp_args, str(pretrained), spec.families, spec.model_id)
        super().__init__(*args, **rest)
        if tp_args.log and getattr(self, "world_size", 1) > 1:  # one log per process: appends never interleave
            log = Path(tp_args.log)
            tp_args.log = str(log.with_name(f"{log.stem}.rank{self.rank}{log.suffix}"))
        self.tokpress_args = tp_args
        logger.info("tokpress: %s on %s (%s)", spec.model_id, pretrained, tp_args.describe())

    def _tokpress_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        with PromptRecorder(self.model, self.tokpress_args) as recorder:
            out = getattr(super(), name)(*args, **kwargs)
        summary = summarize(recorder.records)
        if summary:
            from lmms_eval.models.model_utils.gen_metrics import log_metrics

            log_metrics(total_elapsed_time=0.0, total_gen_tokens=0, avg_speed=0.0, additional_metrics=summary)
        return out


def _default(cls: type, name: str) -> Any:
    param = inspect.signature(cls.__init__).parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _forwarder(name: str):
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return self._tokpress_call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"lmms-eval's ``{name}`` with tokpress applied for the call (see the module doc)."
    return method


def build(spec: WrapperSpec) -> type:
    """The tokpress subclass of ``spec.base`` (imports that lmms-eval module)."""
    module_name, class_name = spec.base.split(":")
    base = getattr(importlib.import_module(module_name), class_name)
    namespace: dict[str, Any] = {
        "tokpress_spec": spec,
        "tokpress_base": base,
        "__module__": __name__,
        "__qualname__": spec.class_name,
        "__doc__": f"``--model {spec.model_id}``: lmms-eval's ``{class_name}`` compressed by tokpress.",
    }
    for name in REQUEST_METHODS:
        if callable(getattr(base, name, None)):
            namespace[name] = _forwarder(name)
    return type(spec.class_name, (TokpressWrapperMixin, base), namespace)


def __getattr__(name: str) -> type:
    for spec in WRAPPERS:
        if spec.class_name == name:
            cls = build(spec)
            globals()[name] = cls
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
