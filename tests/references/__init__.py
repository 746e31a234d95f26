"""Plain reference implementations and golden-case loaders used as test oracles."""
