"""FINE-KED: the fine-grained knowledge-editing benchmark (WikiData client, builder, HF export)."""
