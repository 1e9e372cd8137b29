"""The drop-in loop of the README, written out: what a user's own training loop does with a method."""


def fit_by_hand(method, model, optimizer, clean, loader, epochs: int, num_samples: int) -> None:
    """``method.bind``, then per epoch ``begin_epoch``, ``loss``/backward/step per batch, ``end_epoch``;
    ``close`` at the end — the steps ``Trainer.fit`` takes."""
    method.bind(model, optimizer, clean, num_samples=num_samples, epochs=epochs)
    for epoch in range(epochs):
        method.begin_epoch(epoch)
        for x, y, idx in loader:
            loss, _ = method.loss(x, y, idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        method.end_epoch(epoch)
    method.close()
