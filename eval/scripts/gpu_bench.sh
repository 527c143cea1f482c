#!/usr/bin/env bash
# The full-size GPU runs (issues 4, 12, 15), for a session that is lent a GPU. From the repository root:
#   bash eval/scripts/gpu_bench.sh [OUT_DIR]        (default OUT_DIR: eval/results)
# The GPU machine has torch, transformers and accelerate; tokpress installs without dependencies. typer, rich,
# matplotlib and av must be importable too: if `python -c "import typer, rich, matplotlib, av"` fails there, carry
# their wheels as the device tool's README describes. Each run takes a few minutes on an H100.
set -euo pipefail
out="${1:-eval/results}"
python -m pip install -q --no-deps -e .
python -c "import typer, rich, matplotlib, av" || { echo "missing typer/rich/matplotlib/av: carry wheels"; exit 3; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
common=(--random-weights --device cuda --dtype bf16 --attn sdpa --ratios 0.5,0.25,0.1 --repeats 7 --warmup 2)
# LLaVA-OneVision-7B, 32 frames x 196 tokens (+1 newline) = 6273 video tokens: HoliTom's setting; with the vision
# stage (ToMe inside SigLIP at 0.5, stacked on HoliTom / FastV) for the >= 3x goal of issue 15
ov_methods=none,uniform,evs,holitom,fastvid,visionzip,vidcom2,fastv,tome,tome@0.5\>holitom,tome@0.25\>holitom
tokpress bench --arch llava-onevision-7b --frames 32 --size 384 "${common[@]}" --methods "$ov_methods" \
    --out "$out/gpu-llava-onevision-7b-32f"
# issue 16: the query-aware and progressive methods on the same setting (quota's LVLM pre-pass needs decoded frames,
# which --arch's random inputs do not have: its cost is measured by `tokpress bench --video` / `tokpress eval`)
tokpress bench --arch llava-onevision-7b --frames 32 --size 384 "${common[@]}" \
    --methods none,uniform,fastv,pdrop,sparsevlm,aim,mustdrop,vtccls,framebudget --out "$out/gpu-llava-onevision-7b-32f-i16"
# the same under batching (token pruning can lose its gain at concurrency >= 4)
tokpress bench --arch llava-onevision-7b --frames 32 --size 384 "${common[@]}" --methods none,holitom,evs \
    --ratios 0.1 --batch 1,4,8 --out "$out/gpu-llava-onevision-7b-32f-batch"
# flash-attention-2 when installed (tome needs an SDPA/eager vision tower, so it is left out here; rlt runs the
# Qwen ViT's varlen flash path with re-counted cu_seqlens / max_seqlen)
if python -c "import flash_attn" 2>/dev/null; then
  tokpress bench --arch llava-onevision-7b --frames 32 --size 384 "${common[@]/sdpa/flash_attention_2}" \
      --methods none,uniform,evs,holitom,fastv --out "$out/gpu-llava-onevision-7b-32f-fa2"
  tokpress bench --arch qwen2.5-vl-7b --frames 64 --size 448 "${common[@]/sdpa/flash_attention_2}" \
      --methods none,evs,holitom,rlt,rlt@0.5\>holitom --out "$out/gpu-qwen2.5-vl-7b-64f-fa2"
fi
# Qwen2.5-VL-7B, 64 frames of 448x448 = 32 x 16 x 16 = 8192 video tokens; with the vision stage before the ViT
# (rlt alone: encoder and LLM on the kept patch groups; stacked on EVS / HoliTom)
qwen_methods=none,uniform,evs,holitom,fastvid,visionzip,vidcom2,fastv,rlt,rlt@0.5\>evs,rlt@0.5\>holitom
tokpress bench --arch qwen2.5-vl-7b --frames 64 --size 448 "${common[@]}" --methods "$qwen_methods" \
    --out "$out/gpu-qwen2.5-vl-7b-64f"
# Qwen3-VL-8B, 64 frames of 512x512 = 32 blocks x 16 x 16 = 8192 video tokens (+ 32 timestamps; deepstack) — issue 12
tokpress bench --arch qwen3-vl-8b --frames 64 --size 512 "${common[@]}" --out "$out/gpu-qwen3-vl-8b-64f"
