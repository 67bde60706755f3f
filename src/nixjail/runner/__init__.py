"""The worker side: lease run jobs, run each in its own container, report."""
