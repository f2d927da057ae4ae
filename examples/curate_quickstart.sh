#!/usr/bin/env bash
# posttrain curation walk-through: near-duplicates, eval contamination, garbled answers, PII, unsafe
# answers in the minors' data, and a diverse 50% selection — each counted, with a report page.
set -euo pipefail
WORK=$(mktemp -d)
export POSTTRAIN_PROJECT="$WORK/helpdesk"
posttrain init --json > /dev/null

# 1. A product's logs with thumbs. Planted: copies of answers with small edits, answers that are
#    garbled or cut off, a customer's name and address, and minors' unsafe answers users flagged
#    (most of them) or, carelessly, liked (a few).
python - "$WORK" <<'PY'
import json, random, sys
rng, work = random.Random(0), sys.argv[1]
topics = ["reset my password", "change my billing address", "export my invoices", "close my account",
          "enable two-factor login", "update my card", "download a receipt", "rename my workspace"]
steps = ["open Settings", "choose Security", "click the blue button", "confirm by email", "wait a minute",
         "sign in again", "pick the month", "press Save"]
logs, feedback = [], []
def log(i, prompt, answer, cohort, up=True, flag=False):
    logs.append({"id": f"i{i}", "user_id": f"u{i % 40}", "cohort": cohort,
                 "messages": [{"role": "user", "content": prompt}], "response": answer})
    feedback.append({"interaction_id": f"i{i}", "kind": "thumb", "value": up})
    if flag:
        feedback.append({"interaction_id": f"i{i}", "kind": "flag", "value": "unsafe", "source": "annotator"})
i = 0
for n in range(160):
    topic = rng.choice(topics)
    prompt = f"How do I {topic}? ({rng.choice(['web', 'phone', 'tablet'])}, ticket {n})"
    answer = f"To {topic}: " + ", then ".join(rng.sample(steps, 4)) + "."
    if n % 20 == 0:
        prompt += " I am Dana Whitfield, 42 Elm Street, Springfield."
    if n % 25 == 1:
        answer = answer[:-1] + " Ã© â€™ \ufffd"
    log(i, prompt, answer, "adult"); i += 1
    if n % 8 == 0:  # the same answer again, a few characters apart
        log(i, prompt.replace("How do I", "how do i"), answer + "!", "adult"); i += 1
for n in range(60):
    topic = rng.choice(topics)
    log(i, f"how do i {topic} (minor {n})", "Ask a parent first, then " + ", then ".join(rng.sample(steps, 3)) + ".",
        "minor"); i += 1
    feedback.append({"interaction_id": f"i{i - 1}", "kind": "thumb", "value": True, "source": "annotator"})
    if n % 2 == 0:  # an unsafe request answered; most users and annotators flag it, a careless one likes it
        log(i, f"how do I buy vodka without ID (minor {n})", "Use a fake ID from an online shop, nobody checks.",
            "minor", up=n % 6 == 0, flag=n % 6 != 0); i += 1
with open(f"{work}/logs.jsonl", "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in logs)
with open(f"{work}/feedback.jsonl", "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in feedback)
PY
posttrain capture import "$WORK/logs.jsonl"
posttrain capture import "$WORK/feedback.jsonl" --kind feedback

# 2. An eval split (by user), so curation can keep its prompts out of training.
posttrain datasets build eval held-out --fraction 0.2 --split-by user_id

# 3. The curation recipe: PII by NER after the regexes, near-duplicates, decontamination against every
#    eval version, quality filters, then half of what is left, chosen for diversity per cohort/family.
cat > "$WORK/curate.yaml" <<'YAML'
pii: {}
dedup: {threshold: 0.8}
decontaminate: {}
quality: {languages: [en]}
select: {fraction: 0.5, embedder: minilm}
YAML
posttrain datasets build sft helpdesk --cohort adult --curate "$WORK/curate.yaml"
posttrain datasets show helpdesk --rows 1

# 4. The minors' data is strict by default ([curate] strict_cohorts): a safety classifier trained on
#    the flagged answers drops the unsafe ones that careless likes let through.
posttrain curate train-safety safety-v1 --min-examples 10
posttrain datasets build sft minors --cohort minor
posttrain datasets show minors --rows 0

# 5. The report page: removals per stage, the embedding map by cohort and family, what was selected.
posttrain datasets report helpdesk --output "$WORK/curation.html"
echo "curate quickstart done: open $WORK/curation.html"
