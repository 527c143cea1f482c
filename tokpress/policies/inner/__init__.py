"""Inner-LLM policies: choose the visual tokens that survive past a decoder layer."""
