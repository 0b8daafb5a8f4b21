"""manifolds package."""
