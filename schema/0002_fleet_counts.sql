-- 0002_fleet_counts.sql — GET /fleet/summary without scanning the fleet.
-- fleet_counts holds, per hardware class × model × version × online, how many
-- devices are in that group, kept exact inside the writing transaction by
-- triggers on devices and device_models:
--   * every device counts once in (hw_class, '*', '', online): the totals;
--   * a device with no model counts in (hw_class, '', '', online);
--   * a device counts in (hw_class, model, version, online) per model it runs.
-- ('*' and '' are not valid model names.) Inserts and updates use statement
-- triggers with transition tables, so a batch of N rows costs one grouped
-- upsert, not N. A device's model rows must be deleted before the device
-- (the foreign key no longer cascades), so every count change is seen by a
-- trigger while the device row still exists. Groups are upserted in key
-- order, so concurrent writers lock them in the same order. Rules for
-- writers: a device's id never changes (enforced), and one statement writes
-- either devices or device_models, not both (a data-modifying WITH that
-- updates a device and inserts its models would be counted from one
-- snapshot). TRUNCATE of either table rebuilds the counts.

ALTER TABLE device_models DROP CONSTRAINT device_models_device_id_fkey,
    ADD CONSTRAINT device_models_device_id_fkey FOREIGN KEY (device_id) REFERENCES devices (id);

CREATE TABLE fleet_counts (
    hw_class text NOT NULL,
    model    text NOT NULL,
    version  text NOT NULL,
    online   boolean NOT NULL,
    devices  bigint NOT NULL,
    PRIMARY KEY (hw_class, model, version, online)
);

-- Adds grouped deltas (hw_class, model, version, online, delta).
CREATE FUNCTION mf_fleet_apply(hws text[], models text[], versions text[], onl boolean[],
                               deltas bigint[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO fleet_counts AS f (hw_class, model, version, online, devices)
    SELECT hw, m, v, o, sum(d)
    FROM unnest(hws, models, versions, onl, deltas) AS u(hw, m, v, o, d)
    GROUP BY 1, 2, 3, 4 HAVING sum(d) <> 0 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hw_class, model, version, online)
    DO UPDATE SET devices = f.devices + EXCLUDED.devices;
$$;

-- Model rows added (s = 1) or removed (s = -1) by one statement, for devices
-- that exist; the '' group moves when a device's model count crosses zero.
CREATE FUNCTION mf_fleet_rows(ids text[], models text[], versions text[], signs bigint[])
RETURNS void LANGUAGE sql AS $$
    WITH r AS (SELECT * FROM unnest(ids, models, versions, signs) AS u(device_id, model, version, s)),
    -- LATERAL lookups by primary key: the transition rows have no statistics,
    -- so the join order must not be left to the planner.
    rd AS (
        SELECT r.*, d.hw_class, d.online
        FROM r, LATERAL (SELECT hw_class, online FROM devices WHERE id = r.device_id) d),
    dev AS (
        SELECT device_id, hw_class, online, sum(s) AS added FROM rd
        GROUP BY device_id, hw_class, online),
    delta AS (
        SELECT hw_class AS hw, model AS m, version AS v, online AS o, s AS n FROM rd
        UNION ALL
        SELECT dev.hw_class, '', '', dev.online,
               CASE WHEN c.now_n - dev.added = 0 AND c.now_n > 0 THEN -1
                    WHEN c.now_n - dev.added > 0 AND c.now_n = 0 THEN 1 ELSE 0 END
        FROM dev, LATERAL (SELECT count(*) AS now_n FROM device_models m
                           WHERE m.device_id = dev.device_id) c)
    SELECT mf_fleet_apply(array_agg(hw), array_agg(m), array_agg(v), array_agg(o), array_agg(n))
    FROM delta;
$$;

-- Locks the devices a model-row statement touches, in id order, before the
-- counts are computed: an UPDATE of a device's class or online state (which
-- takes the same lock) and another statement adding models to it wait, and
-- mf_fleet_rows, a new statement, then sees what they committed.
CREATE FUNCTION mf_fleet_lock(ids text[]) RETURNS void LANGUAGE sql AS $$
    SELECT NULL::void FROM (SELECT 1 FROM devices WHERE id = ANY(ids) ORDER BY id
                            FOR NO KEY UPDATE) x;
$$;

CREATE FUNCTION mf_fleet_models_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_lock(array_agg(DISTINCT device_id)) FROM nt;
    PERFORM mf_fleet_rows(array_agg(device_id), array_agg(model), array_agg(version),
                          array_agg(1::bigint)) FROM nt;
    RETURN NULL;
END;
$$;

CREATE FUNCTION mf_fleet_models_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_lock(array_agg(DISTINCT device_id)) FROM ot;
    PERFORM mf_fleet_rows(array_agg(device_id), array_agg(model), array_agg(version),
                          array_agg(-1::bigint)) FROM ot;
    RETURN NULL;
END;
$$;

CREATE FUNCTION mf_fleet_models_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_lock(array_agg(DISTINCT device_id))
    FROM (SELECT device_id FROM nt UNION SELECT device_id FROM ot) x;
    PERFORM mf_fleet_rows(array_agg(device_id), array_agg(model), array_agg(version),
                          array_agg(s))
    FROM (SELECT device_id, model, version, 1::bigint AS s FROM nt
          UNION ALL SELECT device_id, model, version, -1::bigint FROM ot) x;
    RETURN NULL;
END;
$$;

CREATE TRIGGER device_models_fleet_ins AFTER INSERT ON device_models
    REFERENCING NEW TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_models_ins();
CREATE TRIGGER device_models_fleet_del AFTER DELETE ON device_models
    REFERENCING OLD TABLE AS ot FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_models_del();
CREATE TRIGGER device_models_fleet_upd AFTER UPDATE ON device_models
    REFERENCING OLD TABLE AS ot NEW TABLE AS nt
    FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_models_upd();

-- New devices have no model rows yet (foreign key): '*' and ''.
CREATE FUNCTION mf_fleet_devices_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_apply(array_agg(hw_class), array_agg(g), array_agg(''::text),
                           array_agg(online), array_agg(1::bigint))
    FROM nt, unnest(ARRAY['*', '']) AS g;
    RETURN NULL;
END;
$$;

-- A device changing class or online state moves all its groups.
CREATE FUNCTION mf_fleet_devices_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_apply(array_agg(hw), array_agg(m), array_agg(v), array_agg(o),
                           array_agg(n))
    FROM (
        WITH ch AS (
            SELECT o.id, o.hw_class AS ohw, o.online AS oon, n.hw_class AS nhw, n.online AS non
            FROM ot o JOIN nt n ON n.id = o.id
            WHERE o.hw_class IS DISTINCT FROM n.hw_class OR o.online IS DISTINCT FROM n.online),
        g AS (
            SELECT ch.*, coalesce(m.model, '') AS m, coalesce(m.version, '') AS v
            FROM ch LEFT JOIN LATERAL (SELECT model, version FROM device_models
                                       WHERE device_id = ch.id) m ON true
            UNION ALL SELECT ch.*, '*', '' FROM ch)
        SELECT nhw AS hw, m, v, non AS o, 1::bigint AS n FROM g
        UNION ALL SELECT ohw, m, v, oon, -1 FROM g) x;
    RETURN NULL;
END;
$$;

-- Deleted devices have no model rows left (foreign key): '*' and ''.
CREATE FUNCTION mf_fleet_devices_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_apply(array_agg(hw_class), array_agg(g), array_agg(''::text),
                           array_agg(online), array_agg(-1::bigint))
    FROM ot, unnest(ARRAY['*', '']) AS g;
    RETURN NULL;
END;
$$;

CREATE TRIGGER devices_fleet_ins AFTER INSERT ON devices
    REFERENCING NEW TABLE AS nt FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_devices_ins();
CREATE TRIGGER devices_fleet_upd AFTER UPDATE ON devices
    REFERENCING OLD TABLE AS ot NEW TABLE AS nt
    FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_devices_upd();
CREATE TRIGGER devices_fleet_del AFTER DELETE ON devices
    REFERENCING OLD TABLE AS ot FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_devices_del();

CREATE FUNCTION mf_fleet_id_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a device id never changes (% -> %)', OLD.id, NEW.id
        USING ERRCODE = 'check_violation';
END;
$$;

CREATE TRIGGER devices_id_fixed BEFORE UPDATE OF id ON devices
    FOR EACH ROW WHEN (NEW.id IS DISTINCT FROM OLD.id) EXECUTE FUNCTION mf_fleet_id_fixed();

-- The counts from scratch (the backfill below, and after a TRUNCATE).
CREATE FUNCTION mf_fleet_rebuild() RETURNS void LANGUAGE sql AS $$
    DELETE FROM fleet_counts;
    INSERT INTO fleet_counts (hw_class, model, version, online, devices)
    SELECT d.hw_class, coalesce(m.model, ''), coalesce(m.version, ''), d.online, count(*)
    FROM devices d LEFT JOIN device_models m ON m.device_id = d.id
    GROUP BY 1, 2, 3, 4
    UNION ALL
    SELECT hw_class, '*', '', online, count(*) FROM devices GROUP BY 1, 4;
$$;

CREATE FUNCTION mf_fleet_rebuild_trg() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mf_fleet_rebuild();
    RETURN NULL;
END;
$$;

CREATE TRIGGER devices_fleet_truncate AFTER TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_rebuild_trg();
CREATE TRIGGER device_models_fleet_truncate AFTER TRUNCATE ON device_models
    FOR EACH STATEMENT EXECUTE FUNCTION mf_fleet_rebuild_trg();

-- Backfill for a database that already has devices.
SELECT mf_fleet_rebuild();
