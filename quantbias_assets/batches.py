"""One engine call for a whole batch, and one per item only when the batch fails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")


def with_fallback(
    batch: Sequence[Item],
    run_batch: Callable[[Sequence[Item]], Sequence[Any]],
    on_item_error: Callable[[int, Exception], None],
) -> list[Any | None]:
    """Run a whole batch; if it fails, run its items one by one so one bad item costs only itself
    (its result is None and `on_item_error` gets its position and error)."""
    try:
        return list(run_batch(batch))
    except Exception:  # noqa: BLE001 - retried per item below, where the error is reported
        results: list[Any | None] = []
        for position, item in enumerate(batch):
            try:
                results.append(run_batch([item])[0])
            except Exception as error:  # noqa: BLE001 - one item's failure is recorded, not fatal
                on_item_error(position, error)
                results.append(None)
        return results
