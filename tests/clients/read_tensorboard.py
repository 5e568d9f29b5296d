"""Read a run directory's TensorBoard event files with TensorBoard's own
reader (EventAccumulator, what `tensorboard --logdir` uses) and print every
scalar series as JSON: {tag: [[step, value], ...]}.

Usage: read_tensorboard.py RUN_DIR
"""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({
    tag: [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in acc.Tags()["scalars"]
}))
