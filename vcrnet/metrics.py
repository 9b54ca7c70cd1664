"""The names of the evaluation metrics, in one place, importing nothing heavy (stdlib only).

The harness reads metrics by these names without loading torch; ``vcrnet.train`` logs them and
``vcrnet.leaderboard`` documents which of the paper's numbers each decoding is.
"""

from __future__ import annotations

# the decodings vcrnet.train.evaluate scores, in the order of vcrnet.leaderboard's table
DECODINGS = (
    "q2a",
    "qa2r",
    "q2ar",
    "qa2r_pred",
    "qa2r_mixture",
    "q2ar_mixture",
    "qa2r_joint16",
    "q2ar_joint16",
    "q2a_and_joint16",
)
# everything vcrnet.train.evaluate returns, logged per split with the prefixes dev_ and val_
# (the training losses are train_ keys of the epoch, not evaluated on a split)
EVALUATED = (*DECODINGS, "joint_nll")
OBJECTIVE = "dev_q2ar"  # what the scheduler, early stopping, BEST and studies select on
REPORTED = "val_q2ar"  # the headline number reported (never selected on)
