"""The training loop of the lab's own scene models (`advlab.zoo.segnet`, `advlab.zoo.detnet`): Adam with a
cosine learning rate over shuffled minibatches, the shuffles drawn from a generator seeded by `seed`."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def adam_cosine(net: nn.Module, count: int, loss_of: Callable[[torch.Tensor], torch.Tensor], *, epochs: int,
                batch_size: int, lr: float, seed: int, progress: bool, desc: str) -> nn.Module:
    """Train `net` on `count` examples: `loss_of(idx)` is the loss of the minibatch with indices idx (B,).
    Returns the net in eval mode."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * -(-count // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    bar = tqdm(total=steps, desc=desc, disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(count, generator=gen)
        for i in range(0, count, batch_size):
            loss = loss_of(order[i:i + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    bar.close()
    return net.eval()
