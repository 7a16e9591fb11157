"""Per-lead behavioural features: what they are (definitions) and where they live (store)."""
