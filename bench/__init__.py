"""COO's benchmark harness: the same trivial workloads on COO and on peers, side by side, in one run."""
