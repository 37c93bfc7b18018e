-- 0003_ingest.sql — telemetry ingest (server/ingest.c): events and reports
-- carry the device's message number, the dedup key of at-least-once delivery
-- (docs/protocol.md): a (device, msg) pair is stored once, whatever the
-- number of redeliveries. Rows written before this migration have no msg.
-- devices.last_msg is the msg of the stored state: an older state (lower
-- msg) arriving late is ignored.

ALTER TABLE events ADD COLUMN msg bigint CHECK (msg IS NULL OR msg > 0);
ALTER TABLE reports ADD COLUMN msg bigint CHECK (msg IS NULL OR msg > 0);
CREATE UNIQUE INDEX events_device_msg ON events (device_id, msg) WHERE msg IS NOT NULL;
CREATE UNIQUE INDEX reports_device_msg ON reports (device_id, msg) WHERE msg IS NOT NULL;

ALTER TABLE devices ADD COLUMN last_msg bigint CHECK (last_msg IS NULL OR last_msg >= 0);
