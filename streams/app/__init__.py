"""The applications: the worker process, the demo, repricing the past."""
