"""Use cases. Callers (api/, cli/) hand in a :class:`Principal`; every data access here is
scoped to what that principal may see. Nothing in this package imports Litestar."""
