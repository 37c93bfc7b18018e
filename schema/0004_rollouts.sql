-- 0004_rollouts.sql — staged rollouts as built (server/controller.c,
-- server/api_rollouts.c, rollout/rollout.h): the statuses of the policy, the
-- progress the controller keeps between steps, per-device outcomes of a
-- rollout, the desired-state outbox, and device labels for plan selectors.

-- Statuses are those of enum mf_rollout_status (mf_rollout_status_name).
ALTER TABLE rollouts DROP CONSTRAINT rollouts_status_check;
DROP INDEX rollouts_one_live;
ALTER TABLE rollouts
    ADD CONSTRAINT rollouts_status_check
        CHECK (status IN ('running', 'paused', 'watching', 'completed', 'failed', 'aborted')),
    -- the hardware classes targeted, in plan order, and each one's status
    -- ('active' | 'failed' | 'done'), index for index
    ADD COLUMN classes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN class_status text[] NOT NULL DEFAULT '{}',
    ADD COLUMN stage_started timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN watch_started timestamptz,
    -- failed with on_fail = rollback, or aborted with rollback: the controller
    -- still has rollbacks to send; cleared once every one is written
    ADD COLUMN rollback_pending boolean NOT NULL DEFAULT false,
    ADD COLUMN finished_at timestamptz,
    ADD COLUMN stepped_at timestamptz; -- the controller's last step
-- Live rollouts (the controller's work list, and the API's conflict check:
-- one live rollout per model and hardware class).
CREATE INDEX rollouts_live ON rollouts (model) WHERE status IN ('running', 'paused', 'watching');
CREATE INDEX rollouts_rollback ON rollouts (id) WHERE rollback_pending;

-- One row per stage, created with the rollout: status 'pending', 'running',
-- 'passed', 'promoted' (advanced by a person), 'failed', 'paused',
-- 'aborted'; decision = {"reason": text, "classes": [gate evidence ...]},
-- rewritten at every step while the stage runs, final once it ends.
ALTER TABLE rollout_stages
    ADD CONSTRAINT rollout_stages_status_check
        CHECK (status IN ('pending', 'running', 'passed', 'promoted', 'failed', 'paused',
                          'aborted'));

-- A device's part in a rollout: assigned (desired state written) at `stage`;
-- rolled back (desired state naming rollback_version written) at
-- rolled_back_at. from_version is what it ran when it was assigned.
ALTER TABLE rollout_devices
    ADD COLUMN hw_class text,
    ADD COLUMN rolled_back_at timestamptz,
    ADD COLUMN rollback_version text;

-- The outbox: a desired state with published_at NULL (or older than
-- updated_at) has not been confirmed by the broker (PUBACK) yet; the
-- controller publishes it again until it is, so a crash between the commit
-- and the publish resends, never loses.
CREATE INDEX desired_states_outbox ON desired_states (updated_at) WHERE published_at IS NULL;

-- Outcomes of a rollout's devices come from their events; the controller
-- reads the latest one per device.
CREATE INDEX events_rollout_device ON events (rollout_id, device_id, id) WHERE rollout_id IS NOT NULL;
CREATE INDEX reports_rollout_device ON reports (rollout_id, device_id, id)
    WHERE rollout_id IS NOT NULL AND valid;

-- Device labels (set at enrollment): a plan's selector `labels` takes the
-- devices whose labels contain all of its pairs.
ALTER TABLE devices ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(labels) = 'object');
