-- 0001_init.sql — the registry, the fleet, and the tables the rollout
-- controller (issue 5) fills: desired state, rollouts, stages, reports, events.
-- Applied by modelfleet-server in one transaction; forward-only.

-- RFC 3339 UTC text of a time, as every API response shows it.
CREATE FUNCTION mf_rfc3339(t timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;

-- API tokens (admin/operator/viewer) and enrollment tokens (role 'enroll').
-- Only the BLAKE2b-256 hash of a secret is stored.
CREATE TABLE api_tokens (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'enroll')),
    secret_hash  bytea NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text,
    expires_at   timestamptz,
    max_uses     integer CHECK (max_uses IS NULL OR max_uses > 0),
    uses         integer NOT NULL DEFAULT 0,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Every key the server has signed with (rotation keeps the old ones listed).
CREATE TABLE signing_keys (
    key_id     text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    first_used timestamptz NOT NULL DEFAULT now(),
    last_used  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE models (
    name       text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per stored blob; id is the BLAKE2b-256 of the served (server-signed)
-- bytes, upload_hash that of the bytes as pushed (for idempotent re-push).
CREATE TABLE packages (
    id            text COLLATE "C" PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
    upload_hash   text NOT NULL UNIQUE CHECK (upload_hash ~ '^[0-9a-f]{64}$'),
    model         text NOT NULL REFERENCES models (name),
    version       text NOT NULL,
    runtime       text NOT NULL,
    hardware      text[] NOT NULL,
    size          bigint NOT NULL CHECK (size > 0),
    payload_bytes bigint NOT NULL,
    manifest      jsonb NOT NULL,
    server_key    text NOT NULL REFERENCES signing_keys (key_id),
    publisher_key text,
    pushed_by     text NOT NULL,
    pushed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX packages_model_version ON packages (model, version);

-- What package serves model+version on a hardware class: exactly one.
CREATE TABLE package_hardware (
    model    text NOT NULL,
    version  text NOT NULL,
    hw_class text NOT NULL,
    package  text COLLATE "C" NOT NULL REFERENCES packages (id) ON DELETE CASCADE,
    PRIMARY KEY (model, version, hw_class)
);

-- Ids compare bytewise (COLLATE "C") everywhere they appear, so joins and
-- keyset pagination use the indexes whatever the database's default collation.
CREATE TABLE devices (
    id              text COLLATE "C" PRIMARY KEY
                    CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    hw_class        text NOT NULL,
    credential_hash bytea NOT NULL UNIQUE CHECK (length(credential_hash) = 32),
    agent_version   text,
    runtimes        text[] NOT NULL DEFAULT '{}',
    online          boolean NOT NULL DEFAULT false,
    last_seen       timestamptz,
    enrolled_at     timestamptz NOT NULL DEFAULT now(),
    enrolled_by     text,
    state           jsonb,       -- the last retained state message
    state_at        timestamptz
);
-- "devices by hw class (and online)", keyset-paginated by id.
CREATE INDEX devices_hw_online ON devices (hw_class, online, id);
CREATE INDEX devices_online ON devices (online, id);

-- What each device reports running, per model.
CREATE TABLE device_models (
    device_id        text COLLATE "C" NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    model            text NOT NULL,
    version          text NOT NULL,
    package          text COLLATE "C", -- NULL for an install the server never saw
    previous_version text,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, model)
);
-- "devices by model and version".
CREATE INDEX device_models_model_version ON device_models (model, version, device_id);

-- "What should device X run": the signed desired state, seq grows per device.
CREATE TABLE desired_states (
    device_id    text COLLATE "C" PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    seq          bigint NOT NULL CHECK (seq > 0),
    body         jsonb NOT NULL,
    payload      text NOT NULL,        -- the exact signed bytes published
    rollout_id   bigint,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

CREATE TABLE rollouts (
    id           bigserial PRIMARY KEY,
    model        text NOT NULL REFERENCES models (name),
    version      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('pending', 'running', 'paused', 'succeeded',
                                                 'failed', 'rolled_back', 'cancelled')),
    plan         jsonb NOT NULL,        -- stages, gates, selector
    stage        integer NOT NULL DEFAULT 0,
    reason       text,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
-- At most one live rollout per model.
CREATE UNIQUE INDEX rollouts_one_live ON rollouts (model)
    WHERE status IN ('pending', 'running', 'paused');

CREATE TABLE rollout_stages (
    rollout_id bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    stage      integer NOT NULL,
    fraction   double precision NOT NULL CHECK (fraction > 0 AND fraction <= 1),
    status     text NOT NULL,
    started_at timestamptz,
    ended_at   timestamptz,
    decision   jsonb,                   -- gate evidence per hardware class
    PRIMARY KEY (rollout_id, stage)
);

-- Which devices a rollout has taken, in which stage (bucket in [0,1)).
CREATE TABLE rollout_devices (
    rollout_id  bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device_id   text COLLATE "C" NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    stage       integer NOT NULL,
    bucket      double precision NOT NULL,
    from_version text,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rollout_id, device_id)
);

-- Benchmark reports; the hot path is "reports for rollout R stage S".
CREATE TABLE reports (
    id          bigserial PRIMARY KEY,
    device_id   text COLLATE "C" NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    rollout_id  bigint REFERENCES rollouts (id) ON DELETE SET NULL,
    stage       integer,
    model       text NOT NULL,
    version     text NOT NULL,
    package     text COLLATE "C",
    hw_class    text NOT NULL,
    valid       boolean NOT NULL,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reports_rollout_stage ON reports (rollout_id, stage, hw_class);
CREATE INDEX reports_device ON reports (device_id, id);

-- Device events (install, activate, refuse, rollback, ...).
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    device_id   text COLLATE "C" REFERENCES devices (id) ON DELETE CASCADE,
    rollout_id  bigint REFERENCES rollouts (id) ON DELETE SET NULL,
    kind        text NOT NULL,
    model       text,
    version     text,
    reason      text,
    body        jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_rollout ON events (rollout_id, id);
CREATE INDEX events_device ON events (device_id, id);

-- Who did what through the API (pushes, tokens, enrollments, decommissions).
CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    action text NOT NULL,
    object text,
    detail jsonb
);
