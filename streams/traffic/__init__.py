"""Generated traffic: scenarios and the generator (the demo, `tokenyield generate`,
the benchmarks)."""
