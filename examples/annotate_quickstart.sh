#!/usr/bin/env bash
# posttrain annotation walk-through: a queue, two annotators, agreement, and a dataset from their labels.
set -euo pipefail
WORK=$(mktemp -d)
export POSTTRAIN_PROJECT="$WORK/calculator"

# 1. A project with a product's logs: answers to "add A B", right 60% of the time, no feedback.
posttrain init --json > /dev/null
python - "$WORK/logs.jsonl" <<'PY'
import json, random, sys
rng = random.Random(0)
with open(sys.argv[1], "w") as logs:
    for i in range(40):
        a, b, right = rng.randrange(50), rng.randrange(50), rng.random() < 0.6
        logs.write(json.dumps({"id": f"i{i}", "user_id": f"u{i % 10}", "cohort": "adult",
                               "messages": [{"role": "user", "content": f"add {a} {b}"}],
                               "response": str(a + b + (0 if right else 1))}) + "\n")
PY
posttrain capture import "$WORK/logs.jsonl"

# 2. A queue: accept or reject each answer, three annotators per item, guidelines in markdown.
printf '# Is the sum right?\nAccept (**y**) only when the answer is exactly A + B; reject (**n**) otherwise.\n' \
  > "$WORK/guidelines.md"
posttrain annotate queues create sums --task accept --overlap 3 --gold-share 0 --guidelines-file "$WORK/guidelines.md"
posttrain annotate fill sums --where "i.cohort = 'adult'" --limit 20

# 3. The server owns the warehouse while it runs; annotators label through it, as their own key.
posttrain serve --port 0 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
until [ -s "$POSTTRAIN_PROJECT/.posttrain/server.json" ]; do sleep 0.2; done
URL=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$POSTTRAIN_PROJECT/.posttrain/server.json")
until curl -sf "$URL/health" > /dev/null; do sleep 0.2; done
for who in ana ben cy; do
  posttrain keys create --role annotator --name "$who" --json \
    | python -c 'import json,sys; print(json.load(sys.stdin)["key"])' > "$WORK/$who.key"
done
echo "annotators sign in at $URL/ui/annotate with their key; here a script labels for them:"

# 4. Each annotator takes items one by one: ana and cy check the sums, ben accepts everything.
label() {  # label QUEUE WHO: take items until none is left
  export POSTTRAIN_API_KEY
  POSTTRAIN_API_KEY=$(cat "$WORK/$2.key")
  while posttrain annotate next "$1" --json > "$WORK/item.json" && [ "$(cat "$WORK/item.json")" != "null" ]; do
    read -r LEASE VERDICT < <(python - "$WORK/item.json" "$2" <<'PY'
import json, sys
item, who = json.load(open(sys.argv[1])), sys.argv[2]
_, a, b = item["item"]["prompt"][-1]["content"].split()
right = item["item"]["response"] == str(int(a) + int(b))
print(item["lease_id"], "true" if right or who == "ben" else "false")
PY
)
    posttrain annotate submit "$LEASE" --label "{\"accept\": $VERDICT}" > /dev/null
  done
  unset POSTTRAIN_API_KEY
}
label sums ana
label sums ben
label sums cy

# 5. How much they agree (ben drags it down), who is fast, and the labels with each item's consensus.
posttrain annotate stats sums
posttrain annotate export sums --output "$WORK/labels.parquet" --format parquet

# 6. The consensus is feedback with source 'annotator': the dataset builders read it as any other.
posttrain sql "SELECT source, kind, count(*) AS n FROM feedback GROUP BY ALL ORDER BY ALL"
posttrain datasets build sft checked-sums --source annotator
echo "annotate quickstart done"
