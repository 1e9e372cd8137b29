"""``train --report``: the audit of the training labels with the trained model's penultimate features
(``find_label_issues`` against the clean subset), written as an HTML report."""
from __future__ import annotations

import numpy as np
import torch

from .outputs import OutputExists


@torch.no_grad()
def penultimate_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """The model's penultimate features (the input of its head) of the rows of ``x``, in eval mode
    (``features_and_logits`` where the model has it, else a hook on the last ``nn.Linear``)."""
    from ..capture import penultimate, split_forward

    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        fwd = split_forward(model) or (lambda xb: penultimate(model, xb))
        out = [fwd(x[i:i + batch_size].to(dev))[0].float().cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


_IMAGE_DATASETS = ("mnist5k", "digits", "cifar10", "cifar100")


def audit_training_labels(model, data, path: str, *, dataset: str, noise: str, scorer: str = "auto",
                          class_names=None, max_samples: int = 100, title: str = "Label issues") -> "object":
    """``find_label_issues`` on the trained model's penultimate features of the training rows (the clean
    subset: ``data.x_clean``/``data.y_clean``); writes the HTML report to ``path`` (never overwritten,
    thumbnails for the image datasets, the true labels marked as known only because the noise is
    injected).  Returns the ``LabelIssues``."""
    from ..label_issues import find_label_issues
    from ..label_issues.report import image_shape, write_report

    feats = penultimate_features(model, data.x_train)
    clean = penultimate_features(model, data.x_clean)
    issues = find_label_issues(feats, data.y_train.cpu().numpy(), clean_features=clean,
                               clean_labels=data.y_clean.cpu().numpy(), num_classes=data.num_classes, scorer=scorer)
    images = data.x_train if dataset in _IMAGE_DATASETS and image_shape(data.x_train.shape) else None
    true = getattr(data, "y_train_true", None)
    note = None
    if noise.startswith("cifar-n:"):
        note = ("true labels are CIFAR's own labels, known here only because the noisy labels (CIFAR-N, human) "
                "were collected for a labelled dataset; a real dataset has none")
    elif noise == "none":
        true = None  # nothing was injected: the given labels are the true ones
    try:
        write_report(issues, path, images=images, class_names=class_names, max_samples=max_samples, title=title,
                     true_labels=true, **({"true_label_note": note} if note else {}))
    except FileExistsError:
        raise OutputExists(f"refusing to overwrite {path}") from None
    return issues
