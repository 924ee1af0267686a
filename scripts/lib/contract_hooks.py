"""schemathesis hooks for scripts/contract-test.sh (loaded through SCHEMATHESIS_HOOKS)."""

import schemathesis

# POST /v1/send/raw takes a complete message as text: sent as schemathesis sends text/plain.
schemathesis.serializer.alias("message/rfc822", "text/plain")
