-- 007: annotation. 001's placeholder tables were never written; they are replaced by queues with
-- their task and schema, items (one interaction or a pair), leases (who holds an item until when)
-- and labels (one annotator's or judge's answer). A resolved item's consensus is written as
-- feedback (source annotator or judge), which every dataset builder already reads.

DROP TABLE annotation_tasks;
DROP TABLE labels;
DROP TABLE annotation_queues;

CREATE TABLE annotation_queues (
    id                 VARCHAR PRIMARY KEY,
    name               VARCHAR NOT NULL UNIQUE,
    description        VARCHAR,
    task               VARCHAR NOT NULL,   -- rating, accept, rewrite, pairwise, classify, comment
    config             JSON NOT NULL,      -- the QueueConfig: schema, overlap, lease, priority, judges ...
    guidelines         VARCHAR NOT NULL,   -- markdown
    guidelines_version INTEGER NOT NULL,
    version            INTEGER NOT NULL,   -- bumps when the config changes
    state              VARCHAR NOT NULL,   -- open, paused, closed
    created_by         VARCHAR,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

CREATE TABLE annotation_items (
    id                    VARCHAR PRIMARY KEY,
    queue_id              VARCHAR NOT NULL,
    interaction_id        VARCHAR NOT NULL,
    second_interaction_id VARCHAR,            -- pairwise: the other answer to the same prompt
    origin                VARCHAR NOT NULL,   -- where, dataset, ids, active, gold
    priority              DOUBLE PRECISION NOT NULL,    -- served highest first
    reason                VARCHAR,            -- why active selection chose it
    cohort                VARCHAR,
    gold                  JSON,               -- a gold item's known answer
    status                VARCHAR NOT NULL,   -- open, done
    consensus             JSON,               -- the resolved label
    resolved_by           VARCHAR,            -- majority, dawid-skene, judge
    feedback_id           VARCHAR,            -- the feedback the consensus wrote
    created_at            TIMESTAMP NOT NULL,
    resolved_at           TIMESTAMP
);

CREATE TABLE annotation_leases (
    id          VARCHAR PRIMARY KEY,
    item_id     VARCHAR NOT NULL,
    queue_id    VARCHAR NOT NULL,
    annotator   VARCHAR NOT NULL,   -- the key id
    swapped     BOOLEAN NOT NULL,   -- pairwise: the second interaction was shown as answer A
    started_at  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL,
    state       VARCHAR NOT NULL,   -- active, submitted, skipped, expired
    ended_at    TIMESTAMP,
    reason      VARCHAR             -- a skip's reason
);

CREATE TABLE labels (
    id                 VARCHAR PRIMARY KEY,
    queue_id           VARCHAR NOT NULL,
    item_id            VARCHAR NOT NULL,
    lease_id           VARCHAR,
    interaction_id     VARCHAR NOT NULL,
    annotator          VARCHAR NOT NULL,   -- a key id, or judge:NAME
    source             VARCHAR NOT NULL,   -- annotator, judge
    value              JSON NOT NULL,
    confidence         DOUBLE PRECISION,             -- a judge's confidence in [0, 1]
    seconds            DOUBLE PRECISION,             -- time the annotator spent
    queue_version      INTEGER NOT NULL,
    guidelines_version INTEGER NOT NULL,
    created_at         TIMESTAMP NOT NULL
);
