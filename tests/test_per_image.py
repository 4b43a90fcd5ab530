"""Per-image arrays of a streamed loop (`advlab.core.per_image`): chunks written in any order give
what concatenating them in order gives, traces of different lengths padded with their last step."""
from __future__ import annotations

import torch

from advlab.core.per_image import PerImageArrays


def test_chunks_in_any_order_fill_the_arrays_as_a_concatenation_would():
    parts = [torch.arange(0, 3), torch.arange(3, 5), torch.arange(5, 9)]  # (B,) per chunk
    starts = [0, 3, 5]
    found = PerImageArrays(9)
    for k in (2, 0, 1):
        found.put(starts[k], {"queries": parts[k], "dist": parts[k].float().unsqueeze(1).expand(-1, 2)})
    arrays = found.complete()
    assert torch.equal(arrays["queries"], torch.cat(parts)) and arrays["queries"].dtype == torch.long
    assert torch.equal(arrays["dist"], torch.cat(parts).float().unsqueeze(1).expand(-1, 2))


def test_traces_are_padded_with_each_image_s_last_step_and_a_partial_key_is_dropped():
    short, long = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[5.0], [6.0], [7.0], [8.0]])  # (T, B)
    found = PerImageArrays(3)
    found.put_steps(0, {"trace_l2": short, "trace_only_here": short})
    found.put_steps(2, {"trace_l2": long})  # longer: the columns written before repeat their last step
    arrays = found.complete()
    assert torch.equal(arrays["trace_l2"], torch.tensor([[1.0, 2.0, 5.0], [3.0, 4.0, 6.0], [3.0, 4.0, 7.0],
                                                          [3.0, 4.0, 8.0]]))
    assert "trace_only_here" not in arrays  # two of three images: not a per-image array
    found = PerImageArrays(3)
    found.put_steps(2, {"trace_l2": long})
    found.put_steps(0, {"trace_l2": short})  # shorter, after a longer one: padded as it is written
    assert torch.equal(found.complete()["trace_l2"], arrays["trace_l2"])
