"""Live configuration from compacted topics: prices and budgets."""
