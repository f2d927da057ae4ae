-- 003: the gateway's routing: cohort rules (user attributes → cohort) and routes (cohort and
-- requested model → a model or an experiment), each evaluated in position order, first match wins.

CREATE TABLE cohort_rules (
    name        VARCHAR PRIMARY KEY,
    cohort      VARCHAR NOT NULL,
    condition   VARCHAR NOT NULL,     -- e.g. "age < 18 and country in ('DE', 'FR')"
    position    INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL
);

CREATE TABLE routes (
    name        VARCHAR PRIMARY KEY,
    cohort      VARCHAR,              -- NULL: every cohort
    requested   VARCHAR,              -- the model name a request asks for; NULL: any
    model       VARCHAR,              -- serve this model ...
    experiment  VARCHAR,              -- ... or this experiment (exactly one of the two)
    position    INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
