"""The command line's view of a run: a progress bar fed by the loop's ``on_step`` events."""

from __future__ import annotations

from tqdm import tqdm


class ProgressBar:
    """An ``Events.on_step`` listener drawing a tqdm bar of a run's steps and its loss. It
    starts at the first step it sees, so a resumed run's bar starts where the run resumed."""

    def __init__(self, total: int, desc: str, disable: bool = False):
        self.total, self.desc, self.disable = total, desc, disable
        self.bar: tqdm | None = None

    def __call__(self, done: int, logs: dict[str, float]) -> bool:
        if self.bar is None:
            self.bar = tqdm(
                total=self.total,
                initial=done - 1,
                desc=self.desc,
                disable=self.disable,
                dynamic_ncols=True,
            )
        self.bar.update(1)
        if "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.4f}")
        return False  # never asks the run to stop

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
