#!/usr/bin/env bash
# posttrain quickstart: a project, a server, capture over HTTP and the SDK, SQL, export, import.
set -euo pipefail
WORK=$(mktemp -d)
export POSTTRAIN_PROJECT="$WORK/shop-assistant"

# 1. A project: settings, the DuckDB warehouse, artifacts, and an admin key shown once.
posttrain init --json > "$WORK/init.json"
ADMIN=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_key"])' "$WORK/init.json")
INGEST=$(posttrain keys create --role ingest --name quickstart --json \
         | python -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# 2. The server owns the warehouse while it runs; other commands go through it.
posttrain serve --port 0 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
until [ -s "$POSTTRAIN_PROJECT/.posttrain/server.json" ]; do sleep 0.2; done
URL=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$POSTTRAIN_PROJECT/.posttrain/server.json")
until curl -sf "$URL/health" > /dev/null; do sleep 0.2; done

# 3. Capture over HTTP: one interaction, then feedback on it (thumb and an edit).
curl -sf "$URL/api/capture/interactions" -H "Authorization: Bearer $INGEST" \
  -d '{"interactions": [{"id": "demo-1", "user_id": "u1", "cohort": "adult", "model": "base",
       "messages": [{"role": "user", "content": "What is 12 * 12?"}], "response": "124"}]}'
echo
curl -sf "$URL/api/capture/feedback" -H "Authorization: Bearer $INGEST" \
  -d '{"feedback": [{"interaction_id": "demo-1", "kind": "thumb", "value": "down"},
                    {"interaction_id": "demo-1", "kind": "edit", "text": "144"}]}'
echo

# 4. Capture from Python with the SDK: non-blocking, batched, retried with the same ids.
python - "$URL" "$INGEST" <<'PY'
import sys
import posttrain

with posttrain.Client(sys.argv[1], sys.argv[2]) as client:
    for i in range(200):
        cohort = "minor" if i % 4 == 0 else "adult"
        iid = client.log_interaction(
            messages=[{"role": "user", "content": f"What is {i} + {i}?"}],
            response=str(2 * i), user_id=f"u{i % 20}", cohort=cohort, model="base",
        )
        client.log_feedback(iid, "thumb", value=i % 3 != 0)
print("SDK: 200 interactions and 200 thumbs sent")
PY

# 5. Read it back: SQL and the API work while the server runs.
posttrain sql "SELECT cohort, count(*) AS interactions FROM interactions GROUP BY cohort ORDER BY cohort"
posttrain sql "SELECT kind, count(*) AS events, avg(score) AS mean_score FROM feedback GROUP BY kind ORDER BY kind"
curl -sf "$URL/api/interactions/demo-1" -H "Authorization: Bearer $ADMIN" \
  | python -c 'import json,sys; i=json.load(sys.stdin); print(i["id"], [f["kind"] for f in i["feedback"]])'
posttrain capture export --output "$WORK/interactions.jsonl"

# 6. Stop the server; bulk-import OpenAI-style chat logs straight into the warehouse.
kill $SERVER; wait $SERVER 2>/dev/null || true
python - "$WORK/chat-logs.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(1000):
        f.write(json.dumps({"messages": [{"role": "user", "content": f"Reverse 'ab{i}'"},
                                         {"role": "assistant", "content": f"ab{i}"[::-1]}]}) + "\n")
PY
posttrain capture import "$WORK/chat-logs.jsonl"
posttrain sql "SELECT count(*) AS interactions, count(DISTINCT user_id) AS users FROM interactions"
echo "quickstart done: project at $POSTTRAIN_PROJECT"
