-- 005: the flywheel loop: one row per turn, one per step of a turn, so a killed loop resumes
-- where it stopped and never redoes a finished step.

CREATE TABLE loop_turns (
    id            VARCHAR PRIMARY KEY,
    loop          VARCHAR NOT NULL,
    turn          INTEGER NOT NULL,
    state         VARCHAR NOT NULL,   -- running, done, rejected, failed
    recipe        JSON NOT NULL,
    window_start  TIMESTAMP,          -- interactions after this (the previous turn's window_end) ...
    window_end    TIMESTAMP,          -- ... and up to this feed the turn
    serving       JSON NOT NULL,      -- cohort → model when the turn started
    result        JSON,               -- cohort → model after it, decisions, reasons
    error         VARCHAR,
    started_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP,
    UNIQUE (loop, turn)
);

CREATE TABLE loop_steps (
    turn_id      VARCHAR NOT NULL,
    step         VARCHAR NOT NULL,
    state        VARCHAR NOT NULL,    -- running, done, skipped, failed
    result       JSON,
    error        VARCHAR,
    seconds      DOUBLE PRECISION,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    PRIMARY KEY (turn_id, step)
);
