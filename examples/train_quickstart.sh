#!/usr/bin/env bash
# From feedback to models: logs with thumbs and edits → dataset versions → SFT, reward model, DPO, GRPO.
set -euo pipefail
WORK=$(mktemp -d)
export POSTTRAIN_PROJECT="$WORK/calculator"
posttrain init --json > /dev/null

# 1. A tiny chat model built from scratch (no hub), and a product's logs: answers to "add A B",
#    60% right; users gave thumbs, annotators corrected some wrong answers.
posttrain models init-tiny base --hidden 64 --layers 2
python - "$WORK" <<'PY'
import json, random, sys
rng, work = random.Random(0), sys.argv[1]
with open(f"{work}/logs.jsonl", "w") as logs, open(f"{work}/feedback.jsonl", "w") as feedback:
    for i in range(600):
        a, b = rng.randrange(50), rng.randrange(50)
        right = rng.random() < 0.6
        logs.write(json.dumps({"id": f"i{i}", "user_id": f"u{i % 60}", "cohort": "adult", "model": "base",
                               "messages": [{"role": "user", "content": f"add {a} {b}"}],
                               "response": str(a + b if right else a + b + 1),
                               "metadata": {"answer": str(a + b)}}) + "\n")
        feedback.write(json.dumps({"interaction_id": f"i{i}", "kind": "thumb", "value": right}) + "\n")
        if not right and i % 2 == 0:
            feedback.write(json.dumps({"interaction_id": f"i{i}", "kind": "edit", "text": str(a + b),
                                       "source": "annotator"}) + "\n")
PY
posttrain capture import "$WORK/logs.jsonl"
posttrain capture import "$WORK/feedback.jsonl" --kind feedback

# 2. Immutable dataset versions (PII scrubbed, content-hashed), split by user so eval never leaks.
posttrain datasets build eval held-out --fraction 0.1 --split-by user_id
posttrain datasets build sft accepted --split train
posttrain datasets build preference pairs --split train
posttrain datasets build prompts rl-prompts --verifier exact_match --split train
posttrain datasets list

# 3. Train: SFT first, then a reward model, DPO (collapse guard on) and GRPO with a verifier.
posttrain train sft --model base --dataset accepted --output sft1 --epochs 3 --learning-rate 1e-3
posttrain train reward --model base --dataset pairs --output rm1 --epochs 2
posttrain train dpo --model sft1 --dataset pairs --output dpo1 --learning-rate 5e-5
posttrain train grpo --model dpo1 --dataset rl-prompts --reward verifier:exact_match --max-steps 10 --output grpo1

# 4. Lineage: which runs, dataset versions and feedback made the last model.
posttrain models list
posttrain models lineage grpo1

# 5. Export a version for other tools; it loads with Hugging Face datasets and feeds TRL directly.
posttrain datasets export pairs --format jsonl --output "$WORK/pairs.jsonl"
python -c 'import sys; from datasets import load_dataset; print(load_dataset("json", data_files=sys.argv[1])["train"])' \
  "$WORK/pairs.jsonl"
echo "train quickstart done: project at $POSTTRAIN_PROJECT"
