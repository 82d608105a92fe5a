"""Why a stream refuses a segment: the request field at fault travels with the error.

A bedside device's segment can be unusable for reasons only the signal code sees (a rate it cannot
resample, peaks outside the segment, channel names that do not match the samples). The daemon
answers such a segment with a 4xx naming ``field``; ``SegmentConflict`` is the one that contradicts
what the stream already holds (a segment starting inside data already accepted).
"""

from __future__ import annotations


class SegmentRejected(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Raised in feature-extraction worker processes: it must survive pickling with its field.
        return (type(self), (self.field, str(self)))


class SegmentConflict(SegmentRejected):
    """The segment overlaps the stream's accepted time line."""
