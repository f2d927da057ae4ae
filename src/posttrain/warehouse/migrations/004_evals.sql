-- 004: evaluation suites. An eval run is one model scored on one dataset version by a suite's
-- scorers; a comparison puts two runs side by side with a pairwise judge, and records a gate.
-- Lineage: models.id <- eval_runs.model_id, eval_runs.dataset_version_id -> dataset_versions.id.

CREATE TABLE eval_runs (
    id                 VARCHAR PRIMARY KEY,
    model_id           VARCHAR NOT NULL,   -- models.id
    model              VARCHAR NOT NULL,   -- the model's name when it ran
    dataset_version_id VARCHAR NOT NULL,   -- dataset_versions.id
    dataset            VARCHAR NOT NULL,   -- NAME@VERSION
    job_id             VARCHAR,            -- jobs.id (kind evals.run)
    config             JSON NOT NULL,      -- the suite: scorers, samples, temperature, seed ...
    results            JSON NOT NULL,      -- mean and 95% CI per scorer, overall / per cohort / per family
    scores_path        VARCHAR NOT NULL,   -- Parquet: one row per prompt x sample, completion and scores
    created_at         TIMESTAMP NOT NULL
);

CREATE TABLE eval_comparisons (
    id                 VARCHAR PRIMARY KEY,
    candidate_run_id   VARCHAR NOT NULL,   -- eval_runs.id
    baseline_run_id    VARCHAR NOT NULL,   -- eval_runs.id
    judge              VARCHAR NOT NULL,
    results            JSON NOT NULL,      -- win rate and paired differences, with CIs
    gate               JSON,               -- the gate's verdict, when one was asked for
    created_at         TIMESTAMP NOT NULL
);
