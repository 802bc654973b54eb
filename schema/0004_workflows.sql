-- 0004: what the workflow engine needs beyond 0001's tables: per-run limits and the
-- "some step had no runner" flag on runs, the kind of a wait (a Pause_ step or an approval
-- before a step's side effects) and what its expiry means, and an index for the timer.

ALTER TABLE workflow_runs ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE workflow_runs ADD COLUMN partial INTEGER NOT NULL DEFAULT 0 CHECK (partial IN (0, 1));

-- pause | approval
ALTER TABLE workflow_waits ADD COLUMN kind TEXT NOT NULL DEFAULT 'pause';
-- timeout: the step's own timeout (routes to timeout.on); limit: the pause-length cap
ALTER TABLE workflow_waits ADD COLUMN on_expiry TEXT NOT NULL DEFAULT 'timeout';

CREATE INDEX workflow_waits_expiry ON workflow_waits(expires_at) WHERE status = 'open';
CREATE INDEX workflow_runs_created ON workflow_runs(created_at);

-- A file trigger may run its workflow with the watched root as the workspace (so Read_ can
-- see the file that fired it); off unless the trigger's creator asked for it.
ALTER TABLE workflow_triggers ADD COLUMN in_root INTEGER NOT NULL DEFAULT 0 CHECK (in_root IN (0, 1));
