"""Models: the registry (light), the tiny-model factory and generation (torch, imported on use)."""
