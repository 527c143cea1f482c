"""Model-family adapters ("where"): one module per family, registered by ``config.model_type``."""

from tokpress.registry import register_adapter

register_adapter("qwen2_vl", "tokpress.patches.qwen2_vl:Qwen2VLAdapter")
register_adapter("qwen2_5_vl", "tokpress.patches.qwen2_vl:Qwen2VLAdapter")
register_adapter("llava_onevision", "tokpress.patches.llava_onevision:LlavaOnevisionAdapter")
