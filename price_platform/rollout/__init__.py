"""Safe rollout of a challenger past the champion: shadow scoring, a canary share, offline replay
and a sequential gate on live error that promotes or rolls back through the registry's aliases.

A version's path: aliased ``shadow`` (scores every request off the request path), then
``challenger`` with a canary share (answers that share of traffic), while the gate of
:mod:`price_platform.rollout.gate` watches paired live errors and decides. Before any live
traffic, :mod:`price_platform.rollout.replay` scores it on logged requests with known prices.
"""

SHADOW = "shadow"
#: Registered-model tag holding the share of traffic the ``challenger`` answers (``"0"``: none).
CANARY_SHARE_TAG = "canary_share"
