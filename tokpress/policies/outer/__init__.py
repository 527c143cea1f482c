"""Outer-LLM policies: choose the video tokens that enter the decoder."""
