"""The wire format between the ServerApp and the ClientApp: every record and key, named once.

A train or evaluate message from the server carries::

    content[ARRAYS_KEY]  ArrayRecord   the global model (train; evaluate)
    content[CONFIG_KEY]  ConfigRecord  SERVER_ROUND_KEY, LEARNING_RATE_KEY, LOCAL_EPOCHS_KEY,
                                       CLIENT_HOOK_KEY (the plugin whose client hooks apply),
                                       REPORT_LOSS_BEFORE_KEY (cost-weighted strategies)

and a site's reply::

    content[ARRAYS_KEY]       ArrayRecord   the trained model (train only)
    content[METRICS_KEY]      MetricRecord  NUM_EXAMPLES_KEY (the aggregation weight), LOSS_KEY,
                                            NUM_PATCHES_KEY, TRAIN_SECONDS_KEY, LOSS_BEFORE_KEY and
                                            LOSS_AFTER_KEY when asked; Dice/HD95 on evaluate
    content[SITE_RECORD_KEY]  ConfigRecord  SITE_ID_KEY, MANIFEST_KEY (hash of the site's files)

A strategy that sends more (SCAFFOLD's control variates) names its own records in its file.
"""

from __future__ import annotations

# Records of a message's content
ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
SITE_RECORD_KEY = "site"

# The round's config, server -> site
SERVER_ROUND_KEY = "server-round"
LEARNING_RATE_KEY = "learning-rate"
LOCAL_EPOCHS_KEY = "local-epochs"
CLIENT_HOOK_KEY = "client-hook"
REPORT_LOSS_BEFORE_KEY = "report-loss-before"
MAY_BE_LAST_ROUND_KEY = "may-be-last-round"  # evaluate: early stopping ends the run after this round without a gain

# A reply's metrics, site -> server
NUM_EXAMPLES_KEY = "num-examples"  # training (or validation) subjects: FedAvg's weight
LOSS_KEY = "loss"
LOSS_BEFORE_KEY = "loss-before"  # on fixed probe patches, before local training
LOSS_AFTER_KEY = "loss-after"  # the same patches, after
NUM_PATCHES_KEY = "num-patches"
TRAIN_SECONDS_KEY = "train-seconds"
# Personalised FL (client_app/personal_eval.py): the evaluate reply scores the global model under the
# plain names (``dice_et``) and the site's personal model with these prefixes; only scores travel.
PERSONAL_PREFIX = "personal_"  # on the site's validation subjects
PERSONAL_HELDOUT_PREFIX = "personal_heldout_"  # on the held-out test set, where the site can read it
NUM_HELDOUT_KEY = "num-heldout"  # held-out subjects the personal model was scored on
PERSONAL_LOSS_KEY = "personal-loss"  # train reply: the personal model's last-epoch loss (Ditto)

# A reply's site record, site -> server
SITE_ID_KEY = "site-id"
MANIFEST_KEY = "data-manifest-sha256"
