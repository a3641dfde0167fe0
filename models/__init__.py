"""hvd models: ``nn.Module``s and losses (student, teacher encoder and heads, LSS, losses)."""
