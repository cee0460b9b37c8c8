# ruff: noqa: F722
r"""The unlearning literature's "MIA-efficacy": an SVC membership classifier applied to the forget
set.

Protocol of SalUn (Fan et al., ICLR 2024) and Unlearn-Sparse (Jia et al., NeurIPS 2023), whose
reported number is the ``confidence`` entry: on the **unlearned** model, take a per-sample
feature (the true-class confidence :math:`p_y` by default) for

* a random subset of the retain set, labelled *member* (1), of the size of the test set, and
* the test set, labelled *non-member* (0);

fit an RBF support-vector classifier (``C = 3``, ``gamma = "auto"``) on them, and apply it to the
forget set. The efficacy is the fraction of forget samples predicted **non-member**, in percent:
high means the forget set looks like data the model never saw. Retrain's efficacy is the target
(not 100: some training points look like test points even to a model that never saw them).

Example:
  >>> import numpy as np
  >>> rng = np.random.default_rng(0)
  >>> member, nonmember = rng.uniform(0.9, 1.0, 200), rng.uniform(0.0, 0.6, 200)
  >>> svc_mia_efficacy(member, nonmember, rng.uniform(0.0, 0.6, 50)).efficacy > 90
  True
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Float, Int

from jaxtrust.privacy.mia.scores import membership_scores

__all__ = ["SVCMIAResult", "svc_mia_efficacy", "svc_mia_from_logits"]


class SVCMIAResult(NamedTuple):
    """Attributes:
    efficacy: % of target samples predicted non-member.
    train_accuracy: the SVC's accuracy on its own (member / non-member) training features.
    n_target: number of target samples."""

    efficacy: float
    train_accuracy: float
    n_target: int


def _features(x, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [n] or [n, features] array, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def svc_mia_efficacy(
    member_features: Float[np.ndarray, "nm ..."],
    nonmember_features: Float[np.ndarray, "nn ..."],
    target_features: Float[np.ndarray, "nt ..."],
    *,
    C: float = 3.0,
    gamma: str | float = "auto",
) -> SVCMIAResult:
    """Fit the RBF SVC on member (1) vs non-member (0) features, report % of targets
    predicted non-member.

    Args:
      member_features: features of known members ``[n_m]`` or ``[n_m, f]``.
      nonmember_features: features of known non-members.
      target_features: features of the samples to classify (the forget set).
      C, gamma: the SVC's parameters (the literature's 3 and ``"auto"``).

    Returns:
      An :class:`SVCMIAResult`.
    """
    from sklearn.svm import SVC

    xm = _features(member_features, "member_features")
    xn = _features(nonmember_features, "nonmember_features")
    xt = _features(target_features, "target_features")
    if not xm.shape[1] == xn.shape[1] == xt.shape[1]:
        raise ValueError("member, non-member and target features must have equal widths")
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm), np.int64), np.zeros(len(xn), np.int64)])
    clf = SVC(C=C, gamma=gamma, kernel="rbf")
    clf.fit(x, y)
    pred = clf.predict(xt)
    return SVCMIAResult(
        efficacy=float(100.0 * (1.0 - pred.mean())),
        train_accuracy=float((clf.predict(x) == y).mean()),
        n_target=int(len(xt)),
    )


def svc_mia_from_logits(
    retain_logits: Float[np.ndarray, "nr c"],
    retain_labels: Int[np.ndarray, " nr"],
    test_logits: Float[np.ndarray, "nt c"],
    test_labels: Int[np.ndarray, " nt"],
    forget_logits: Float[np.ndarray, "nf c"],
    forget_labels: Int[np.ndarray, " nf"],
    *,
    feature: str = "confidence",
    seed: int = 0,
) -> SVCMIAResult:
    """SalUn's MIA-efficacy from the unlearned model's logits on retain, test and forget data.

    A random subset of the retain rows of the size of the test set (all of them if fewer) is
    the member class, the test set the non-member class; ``feature`` is a kind of
    :func:`~jaxtrust.privacy.mia.scores.membership_scores` (``confidence`` as in the papers).

    Args:
      retain_logits, retain_labels: the model's logits and labels on the retain set.
      test_logits, test_labels: on the test (or validation) set.
      forget_logits, forget_labels: on the forget set.
      feature: the per-sample feature.
      seed: host seed of the retain subset.

    Returns:
      An :class:`SVCMIAResult`.
    """
    rng = np.random.default_rng(seed)
    n = min(len(retain_labels), len(test_labels))
    pick = rng.choice(len(retain_labels), size=n, replace=False)
    member = membership_scores(
        np.asarray(retain_logits)[pick], np.asarray(retain_labels)[pick], feature
    )
    nonmember = membership_scores(test_logits, test_labels, feature)
    target = membership_scores(forget_logits, forget_labels, feature)
    return svc_mia_efficacy(member, nonmember, target)
