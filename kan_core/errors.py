"""Engine exceptions. Bad arguments at public entry points raise plain `ValueError`."""


class KANError(Exception):
    """Base class of the engine's own runtime errors."""


class TrainingCancelled(KANError):
    """`should_stop()` returned True; training stopped cleanly between two steps."""


class NonFiniteLossError(KANError, ArithmeticError):
    """The loss became NaN or infinite; training stopped instead of propagating it."""

    def __init__(self, step: int, stage: str = "", value: float = float("nan")):
        self.step = step
        self.stage = stage
        self.value = value
        where = f" in stage {stage!r}" if stage else ""
        super().__init__(f"loss became non-finite ({value}) at step {step}{where}")
