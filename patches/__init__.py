"""Model-family adapters ("where"): one module per family, registered by ``config.model_type``."""

from tokpress.registry import register_adapter

register_adapter("qwen2_vl", "tokpress.patches.qwen2_vl:Qwen2VLAdapter")
register_adapter("qwen2_5_vl", "tokpress.patches.qwen2_vl:Qwen2VLAdapter")
register_adapter("llava_onevision", "tokpress.patches.llava_onevision:LlavaOnevisionAdapter")
register_adapter("qwen3_vl", "tokpress.patches.qwen3_vl:Qwen3VLAdapter")
register_adapter("qwen3_vl_moe", "tokpress.patches.qwen3_vl:Qwen3VLAdapter")
register_adapter("qwen3_5", "tokpress.patches.qwen3_5:Qwen35Adapter")
register_adapter("qwen3_5_moe", "tokpress.patches.qwen3_5:Qwen35Adapter")
register_adapter("internvl", "tokpress.patches.internvl:InternVLAdapter")
register_adapter("llava_next_video", "tokpress.patches.llava_next_video:LlavaNextVideoAdapter")
