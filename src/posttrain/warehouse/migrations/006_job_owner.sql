-- 006: who runs a job and whether it is still alive, so a job whose process died (SIGKILL, a crash)
-- is marked failed when the project is next opened instead of staying 'running' forever; and a
-- cancellation request the running job honours at its next progress report.

ALTER TABLE jobs ADD COLUMN owner_pid BIGINT;                       -- the process running the job
ALTER TABLE jobs ADD COLUMN owner_host VARCHAR;                     -- its host (a pid means nothing elsewhere)
ALTER TABLE jobs ADD COLUMN heartbeat_at TIMESTAMP;                 -- its last write to the row
ALTER TABLE jobs ADD COLUMN cancel_requested BOOLEAN DEFAULT false; -- set by 'posttrain jobs cancel'
