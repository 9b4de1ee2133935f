"""The glue between the pure core and the adapters: partition and rollup runtimes,
and the ports they use."""
