-- 001: every record in DESIGN.md. Later migrations add columns; this file never changes (beyond spelling
-- DOUBLE as DOUBLE PRECISION, the same type in DuckDB, so that PostgreSQL runs the same file).

CREATE TABLE interactions (
    id                VARCHAR PRIMARY KEY,
    timestamp         TIMESTAMP NOT NULL,
    received_at       TIMESTAMP NOT NULL,
    user_id           VARCHAR,
    session_id        VARCHAR,
    cohort            VARCHAR,
    messages          JSON NOT NULL,
    response          VARCHAR,
    model             VARCHAR,
    experiment        VARCHAR,
    variant           VARCHAR,
    assignment_prob   DOUBLE PRECISION,
    latency_ms        DOUBLE PRECISION,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    cost              DOUBLE PRECISION,
    tags              VARCHAR[] NOT NULL,
    metadata          JSON NOT NULL,
    consent           JSON NOT NULL,
    media             JSON NOT NULL
);

CREATE TABLE feedback (
    id             VARCHAR PRIMARY KEY,
    interaction_id VARCHAR NOT NULL,  -- no foreign key: feedback may arrive before its interaction
    timestamp      TIMESTAMP NOT NULL,
    received_at    TIMESTAMP NOT NULL,
    source         VARCHAR NOT NULL,
    kind           VARCHAR NOT NULL,
    value          JSON,
    score          DOUBLE PRECISION,
    text           VARCHAR,
    author         VARCHAR,
    metadata       JSON NOT NULL
);

CREATE TABLE annotation_queues (
    id          VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL UNIQUE,
    description VARCHAR,
    schema      JSON NOT NULL,       -- what annotators are asked: label names, kinds, choices
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE annotation_tasks (
    id             VARCHAR PRIMARY KEY,
    queue_id       VARCHAR NOT NULL,
    interaction_id VARCHAR NOT NULL,
    status         VARCHAR NOT NULL,  -- pending, assigned, done, skipped
    assignee       VARCHAR,
    prelabel       JSON,              -- an AI judge's suggestion
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);

CREATE TABLE labels (
    id             VARCHAR PRIMARY KEY,
    task_id        VARCHAR,
    interaction_id VARCHAR NOT NULL,
    name           VARCHAR NOT NULL,
    value          JSON,
    author         VARCHAR NOT NULL,
    source         VARCHAR NOT NULL,  -- annotator, judge, verifier
    created_at     TIMESTAMP NOT NULL
);

CREATE TABLE dataset_versions (
    id           VARCHAR PRIMARY KEY,
    name         VARCHAR NOT NULL,
    version      INTEGER NOT NULL,
    kind         VARCHAR NOT NULL,    -- sft, preference, prompts, eval
    recipe       JSON NOT NULL,
    row_count    BIGINT NOT NULL,
    content_hash VARCHAR NOT NULL,
    path         VARCHAR NOT NULL,
    source_ids   JSON NOT NULL,       -- interaction and feedback ids the rows came from
    stats        JSON NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE models (
    id               VARCHAR PRIMARY KEY,
    name             VARCHAR NOT NULL UNIQUE,
    base             VARCHAR,
    parent_id        VARCHAR,
    run_id           VARCHAR,
    recipe           JSON NOT NULL,
    dataset_versions JSON NOT NULL,
    path             VARCHAR NOT NULL,
    content_hash     VARCHAR,
    metrics          JSON NOT NULL,
    status           VARCHAR NOT NULL,  -- candidate, serving, retired
    created_at       TIMESTAMP NOT NULL
);

CREATE TABLE jobs (
    id           VARCHAR PRIMARY KEY,
    kind         VARCHAR NOT NULL,    -- train.sft, evals.run, datasets.build, ...
    config       JSON NOT NULL,
    state        VARCHAR NOT NULL,    -- queued, running, succeeded, failed, cancelled
    progress     DOUBLE PRECISION NOT NULL,
    metrics      JSON NOT NULL,       -- history: a list of {step, name: value}
    log          VARCHAR NOT NULL,
    error        VARCHAR,
    result       JSON,
    created_at   TIMESTAMP NOT NULL,
    started_at   TIMESTAMP,
    finished_at  TIMESTAMP
);

CREATE TABLE experiments (
    id          VARCHAR PRIMARY KEY,
    name        VARCHAR NOT NULL UNIQUE,
    variants    JSON NOT NULL,        -- [{name, model, share}]
    targeting   JSON NOT NULL,        -- cohorts
    metrics     JSON NOT NULL,        -- primary metric and guardrails
    state       VARCHAR NOT NULL,     -- draft, running, stopped, promoted, rolled_back
    analyses    JSON NOT NULL,        -- snapshots
    decision    JSON,
    created_at  TIMESTAMP NOT NULL,
    started_at  TIMESTAMP,
    stopped_at  TIMESTAMP
);

CREATE TABLE api_keys (
    id          VARCHAR PRIMARY KEY,
    name        VARCHAR,
    role        VARCHAR NOT NULL,
    prefix      VARCHAR NOT NULL,
    key_hash    VARCHAR NOT NULL UNIQUE,
    created_at  TIMESTAMP NOT NULL,
    revoked_at  TIMESTAMP
);
