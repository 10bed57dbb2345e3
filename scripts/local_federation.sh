#!/usr/bin/env bash
# One-command live federation on this machine: a SuperLink behind an nginx proxy that lets only
# the Fleet API through, and one SuperNode per site, on 127.0.0.1 with TLS and node
# authentication; a synthetic cohort, one `flwr run`. Needs nginx (or --no-proxy).
# Run `make setup` (or `make test`) first; see docs/deployment.md and `--help`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${FEDTUMOR_PYTHON:-$repo/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "error: $python not found; run 'make setup' in $repo first" >&2
    exit 2
fi
cd "$repo"
exec "$python" -m fedtumor.deployment.local_federation --app-dir "$repo" "$@"
