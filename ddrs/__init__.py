"""ddrs package."""
