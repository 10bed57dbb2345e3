"""Client-level DP on a site: clip the model update before it leaves, when the server asks.

The server's :class:`fedtumor.federation.privacy.ClientLevelDP` puts the clipping norm in each training
round's config; Flower's ``fixedclipping_mod`` then scales the site's update (reply model minus
received model) down to that L2 norm. This mod sits on the train handler only, outside every
client hook and outside the test-only fault mod, so it clips exactly the arrays that are sent.
Without the key (DP off) the handler runs untouched.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM


def clip_update_when_asked(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """``fixedclipping_mod`` when the round config carries a clipping norm; otherwise a no-op."""
    asked = any(KEY_CLIPPING_NORM in record for record in message.content.config_records.values())
    if not asked:
        return call_next(message, context)
    return fixedclipping_mod(message, context, call_next)
