"""``python -m loadtest.rollup_bench``, small: the outboxes it times are the engine's own,
and the rollup adds every cell of them (the figure itself is measured, not asserted)."""

from __future__ import annotations

from loadtest.rollup_bench import outboxes, run
from streams.core.windows import Outbox


def test_the_rollup_bench_times_every_cell_of_the_engines_outboxes() -> None:
    bodies = outboxes(3000, per_checkpoint=2)
    decoded = [Outbox.decode(body) for body in bodies]
    assert len({o.partition for o in decoded}) > 1  # every partition's checkpoints
    assert all(o.cells for o in decoded[:-4])
    # The same outboxes: traffic generated twice ends "now" twice, and two generations
    # a second apart can differ by a window's cell (this failed once).
    figures = run(3000, per_checkpoint=2, bodies=bodies)
    assert figures["outboxes"] == len(bodies)
    assert figures["cells"] == sum(len(o.cells) for o in decoded)
    assert figures["rows"] > 0 and figures["cells_per_second"] > 0
    assert figures["cells_per_outbox"] == round(figures["cells"] / len(bodies), 1)
