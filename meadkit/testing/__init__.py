"""Ground-truth inputs for meadkit's tests and benchmarks (not used by the package itself: a layering test checks)."""
