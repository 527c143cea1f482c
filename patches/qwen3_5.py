"""Qwen3.5 and Qwen3.5-MoE: Qwen3-VL's processor layout and vision tower (no deepstack), a hybrid language model.

Three of every four decoder layers are Gated-DeltaNet linear attention (``layer_types == "linear_attention"``):
a causal convolution and a recurrent state instead of a KV cache. What that means for tokpress, all handled
generically by the engine from ``layer_types``:

* the outer stage shortens what every layer sees, the recurrent layers included;
* an inner stage drops tokens before layer K; every later layer, linear or not, runs on the kept sequence, so
  the recurrent state after the prompt is the state of the kept sequence. Those layers get the 2-D padding mask
  the model gives them, the attention layers the rebuilt causal mask;
* attention scores exist only at full-attention layers: a stage that ranks by attention reads the last
  full-attention layer before K (``Adapter.score_layer``; FastV's layer K-1 whenever that is a full-attention
  layer); a stage with none before it is refused when applied;
* methods that cut the KV cache of the layers before K (PruneVid) cut the attention layers; a recurrent state
  cannot give tokens back, so the linear layers keep what they absorbed;
* decode-time visibility (DyCoke) restricts what the attention layers read; the linear layers absorbed the whole
  prompt when it was prefilled.
"""

from __future__ import annotations

from tokpress.patches.qwen3_vl import Qwen3VLAdapter


class Qwen35Adapter(Qwen3VLAdapter):
    family = "qwen3_5"
