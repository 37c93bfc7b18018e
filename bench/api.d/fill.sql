-- bench/api.d/fill.sql — fills an empty modelfleet database with :devices fake
-- devices for bench/api: one INSERT ... SELECT over generate_series per table,
-- as a bulk load (session_replication_role = replica: no row triggers, no FK
-- checks; the rows are consistent by construction). The trigger-maintained
-- fleet_counts (schema/0002) is then rebuilt with mf_fleet_rebuild(), the
-- function its migration backfills with.
-- Then VACUUM ANALYZE.
-- Deterministic: every choice is a hash of the device number, so two runs with
-- the same count hold the same fleet.  Run with psql -v devices=N.
--
--   hw_class     rpi4 35%, rpi5 20%, x86-cpu 15%, jetson-orin 12%, jetson-nano 10%, x86-gpu 8%
--   online       80%
--   models       4% run nothing; the rest run "digits" (1.0.0 20%, 1.1.0 50%,
--                1.2.0 30%) and 40% of those also "keyword" (0.9.0 30%, 1.0.0 70%)
\set ON_ERROR_STOP on
BEGIN;
SET LOCAL session_replication_role = replica;
-- Each draw is a stable number in [0, 100) per device (hashint4 of i, salted).
CREATE TEMP TABLE bench_draw ON COMMIT DROP AS
SELECT s.*,
       CASE WHEN hw < 35 THEN 'rpi4' WHEN hw < 55 THEN 'rpi5' WHEN hw < 70 THEN 'x86-cpu'
            WHEN hw < 82 THEN 'jetson-orin' WHEN hw < 92 THEN 'jetson-nano' ELSE 'x86-gpu' END
           AS hw_class
FROM (SELECT i,
             'dev-' || lpad(i::text, 7, '0') AS id,
             (hashint4(i) & 2147483647) % 100 AS hw,
             (hashint4(i + 1000000007) & 2147483647) % 100 AS up,
             (hashint4(i + 2000000011) & 2147483647) % 100 AS m1,
             (hashint4(-i - 1) & 2147483647) % 100 AS m2,
             (hashint4(-i - 1000000007) & 2147483647) % 100 AS v
      FROM generate_series(1, :devices) AS i) AS s;

INSERT INTO devices (id, hw_class, credential_hash, agent_version, runtimes, online,
                     last_seen, enrolled_at, enrolled_by)
SELECT id, hw_class,
       decode(lpad(to_hex(i), 64, '0'), 'hex'),
       CASE WHEN v < 90 THEN '0.1.0' ELSE '0.0.9' END,
       CASE WHEN hw >= 70 AND hw < 92 THEN '{onnx,tensorrt}'::text[] ELSE '{onnx}'::text[] END,
       up < 80,
       now() - make_interval(secs => (v * 37 + up) % 3600),
       timestamptz '2026-11-01 00:00:00Z' + make_interval(secs => i),
       'bench'
FROM bench_draw;

-- package: an id per model + version + hw class, as the server would record it.
INSERT INTO device_models (device_id, model, version, package, previous_version, updated_at)
SELECT id, model, version,
       encode(sha256(convert_to(model || ':' || version || ':' || hw_class, 'UTF8')), 'hex'),
       previous_version, updated_at
FROM (SELECT id, hw_class, 'digits' AS model,
             CASE WHEN v < 20 THEN '1.0.0' WHEN v < 70 THEN '1.1.0' ELSE '1.2.0' END AS version,
             CASE WHEN v < 20 THEN NULL ELSE '1.0.0' END AS previous_version,
             timestamptz '2026-11-20 00:00:00Z' + make_interval(secs => i) AS updated_at
      FROM bench_draw WHERE m1 >= 4
      UNION ALL
      SELECT id, hw_class, 'keyword',
             CASE WHEN (v * 7) % 100 < 30 THEN '0.9.0' ELSE '1.0.0' END,
             NULL,
             timestamptz '2026-11-20 00:00:00Z' + make_interval(secs => i)
      FROM bench_draw WHERE m1 >= 4 AND m2 < 40) AS x;

SELECT to_regclass('fleet_counts') IS NOT NULL AS has_fleet_counts \gset
\if :has_fleet_counts
SELECT mf_fleet_rebuild();
\endif
COMMIT;
VACUUM (ANALYZE);
