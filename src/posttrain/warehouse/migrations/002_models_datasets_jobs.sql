-- 002: what training needs beyond 001: a model's kind and tokenizer, a dataset version's manifest,
-- a job's checkpoints and output.

ALTER TABLE models ADD COLUMN kind VARCHAR DEFAULT 'causal-lm';     -- causal-lm, reward-model
ALTER TABLE models ADD COLUMN description VARCHAR;
ALTER TABLE dataset_versions ADD COLUMN manifest_path VARCHAR;
ALTER TABLE dataset_versions ADD COLUMN scrubbed BIGINT DEFAULT 0;  -- PII values replaced
ALTER TABLE jobs ADD COLUMN checkpoint VARCHAR;                     -- latest checkpoint folder
ALTER TABLE jobs ADD COLUMN output VARCHAR;                         -- what the job produced (a model name, ...)
ALTER TABLE interactions ADD COLUMN source VARCHAR;                 -- how it entered: capture, import, generate, gateway
