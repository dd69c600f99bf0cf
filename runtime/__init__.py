"""Loading, running and benchmarking compiled .pte programs."""
