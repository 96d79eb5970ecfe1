// The PostgreSQL schema, as an ordered list of migrations. Migration i (0-based) takes a database from
// version i to i + 1 (the highest row of niche_schema_migrations); the runner applies each in its own
// transaction together with that row, under an advisory lock, so replicas starting at once do not race
// and a crash leaves the schema at a whole version. Never edit a shipped migration: append a new one.
//
// The shape mirrors the SQLite schema (src/db/sqlite/migrations.ts) at its latest version, so the store
// code and any data copied between the two line up column for column:
// - dates are BIGINT milliseconds since the epoch, sizes and ids BIGINT (read back as JS numbers, which the
//   store checks are safe integers);
// - lists of strings (references, signatures, permissions, upstream keys) are JSONB arrays: the server
//   rejects anything that is not a JSON array (the CHECKs), arrays keep their order and duplicates, and
//   they stay queryable in SQL (jsonb_array_elements_text, as a backfill like SQLite's path_refs one or an
//   ad-hoc GC query needs). Their text form (jsonb::text) is the JSON the SQLite store keeps;
// - lookup keys (cache names, token hashes, file hashes, hash parts) are COLLATE "C": byte order, as in
//   SQLite and JavaScript's default sort, so listPaths pages the same way on both, independent of the
//   database's locale, and comparisons in the primary-key indexes skip locale rules.
//
// The SQLite history up to its second migration (upstream_keys, path_refs) is folded into the first here;
// later migrations correspond one to one (SQLite's third is PostgreSQL's second).

export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE caches (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL CONSTRAINT caches_name_key UNIQUE,
    is_public BOOLEAN NOT NULL,
    priority INTEGER NOT NULL,
    store_dir TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Upstream caches' public keys: paths they signed need not be pushed here.
    upstream_keys JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(upstream_keys) = 'array')
  );

  CREATE TABLE signing_keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cache_id BIGINT NOT NULL CONSTRAINT signing_keys_cache_fkey REFERENCES caches (id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    secret_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    CONSTRAINT signing_keys_name_key UNIQUE (cache_id, name)
  );

  CREATE TABLE tokens (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    description TEXT NOT NULL,
    token_hash TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
  );

  -- position keeps the scopes in the order they were given.
  CREATE TABLE token_scopes (
    token_id BIGINT NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    cache_pattern TEXT NOT NULL,
    permissions JSONB NOT NULL CHECK (jsonb_typeof(permissions) = 'array'),
    PRIMARY KEY (token_id, position)
  );

  -- One row per stored NAR file, shared by every cache that holds it.
  CREATE TABLE nars (
    file_hash TEXT COLLATE "C" PRIMARY KEY,
    file_size BIGINT NOT NULL CHECK (file_size >= 0),
    compression TEXT NOT NULL,
    nar_hash TEXT NOT NULL,
    nar_size BIGINT NOT NULL CHECK (nar_size >= 0),
    blob_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );

  -- NARs uploaded to a cache whose narinfo has not arrived yet.
  CREATE TABLE nar_uploads (
    cache_id BIGINT NOT NULL CONSTRAINT nar_uploads_cache_fkey REFERENCES caches (id) ON DELETE CASCADE,
    file_hash TEXT COLLATE "C" NOT NULL REFERENCES nars (file_hash),
    uploaded_at BIGINT NOT NULL,
    PRIMARY KEY (cache_id, file_hash)
  );
  -- Serves the foreign key (deleting a NAR) and GC's "is this NAR still used anywhere".
  CREATE INDEX nar_uploads_file_hash ON nar_uploads (file_hash);

  -- "references" is an SQL keyword, hence refs.
  CREATE TABLE paths (
    cache_id BIGINT NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    hash_part TEXT COLLATE "C" NOT NULL,
    store_path TEXT NOT NULL,
    file_hash TEXT COLLATE "C" NOT NULL REFERENCES nars (file_hash),
    nar_hash TEXT NOT NULL,
    nar_size BIGINT NOT NULL CHECK (nar_size >= 0),
    refs JSONB NOT NULL CHECK (jsonb_typeof(refs) = 'array'),
    deriver TEXT,
    ca TEXT,
    signatures JSONB NOT NULL CHECK (jsonb_typeof(signatures) = 'array'),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cache_id, hash_part)
  );
  -- Serves getNar (is the NAR referenced by a path of this cache), the foreign key and GC.
  CREATE INDEX paths_file_hash ON paths (file_hash, cache_id);

  -- Reverse references, for "who references this path" (refusing deletes that break closures, GC).
  CREATE TABLE path_refs (
    cache_id BIGINT NOT NULL,
    ref_hash TEXT COLLATE "C" NOT NULL,
    hash_part TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (cache_id, ref_hash, hash_part),
    FOREIGN KEY (cache_id, hash_part) REFERENCES paths (cache_id, hash_part) ON DELETE CASCADE
  );
  CREATE INDEX path_refs_referrer ON path_refs (cache_id, hash_part);
  `,
  `
  -- Build logs (nix store copy-log), one per derivation and cache; the log itself is a blob.
  CREATE TABLE build_logs (
    cache_id BIGINT NOT NULL CONSTRAINT build_logs_cache_fkey REFERENCES caches (id) ON DELETE CASCADE,
    drv TEXT COLLATE "C" NOT NULL,
    blob_key TEXT NOT NULL,
    compression TEXT NOT NULL,
    size BIGINT NOT NULL CHECK (size >= 0),
    stored_size BIGINT NOT NULL CHECK (stored_size >= 0),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cache_id, drv)
  );
  -- "Does a path of this cache still name this derivation" when a path is deleted.
  CREATE INDEX paths_deriver ON paths (deriver, cache_id);
  `,
  `
  -- Realisations of content-addressed derivations' outputs (ca-derivations), signed by the cache.
  CREATE TABLE realisations (
    cache_id BIGINT NOT NULL CONSTRAINT realisations_cache_fkey REFERENCES caches (id) ON DELETE CASCADE,
    id TEXT COLLATE "C" NOT NULL,
    out_path TEXT COLLATE "C" NOT NULL,
    dependents JSONB NOT NULL CHECK (jsonb_typeof(dependents) = 'object'),
    signatures JSONB NOT NULL CHECK (jsonb_typeof(signatures) = 'array'),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cache_id, id)
  );
  -- Deleting a path deletes the realisations that point at it.
  CREATE INDEX realisations_out_path ON realisations (cache_id, out_path);
  `,
  `
  -- SSH keys registered as principals: a token row whose secret is the private key (niche ssh-key add).
  ALTER TABLE tokens ADD COLUMN ssh_key_fingerprint TEXT;
  ALTER TABLE tokens ADD COLUMN ssh_public_key TEXT;
  CREATE INDEX tokens_ssh_key ON tokens (ssh_key_fingerprint) WHERE ssh_key_fingerprint IS NOT NULL;
  `,
  `
  -- Lifecycle (niche gc): when each path was last downloaded or pushed (batched writes; NULL until the
  -- first, read as created_at), each cache's retention and size quota, pins, and per-cache usage counters.
  ALTER TABLE paths ADD COLUMN last_access_at BIGINT;
  ALTER TABLE caches ADD COLUMN retention_ms BIGINT;
  ALTER TABLE caches ADD COLUMN max_size BIGINT;

  -- Named roots: a pin keeps its path and the path's whole closure; re-pinning a name moves it.
  CREATE TABLE pins (
    cache_id BIGINT NOT NULL CONSTRAINT pins_cache_fkey REFERENCES caches (id) ON DELETE CASCADE,
    name TEXT COLLATE "C" NOT NULL,
    hash_part TEXT COLLATE "C" NOT NULL,
    store_path TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (cache_id, name)
  );
  CREATE INDEX pins_path ON pins (cache_id, hash_part);

  -- Path count, NAR bytes and stored bytes (each NAR file once) per cache, kept by triggers so every
  -- change of paths, however made, moves them in the same transaction. The usage row is updated first:
  -- its lock orders concurrent changes of one cache, so the next statement's fresh snapshot sees whether
  -- another path of the cache (committed meanwhile) shares the NAR file.
  -- No foreign key: deleting a cache deletes its paths, whose triggers update this row, and PostgreSQL would
  -- check such updates against the cache being deleted. The cache's own trigger deletes the row.
  CREATE TABLE cache_usage (
    cache_id BIGINT PRIMARY KEY,
    paths BIGINT NOT NULL,
    nar_bytes BIGINT NOT NULL,
    stored_bytes BIGINT NOT NULL,
    last_push_at BIGINT
  );
  INSERT INTO cache_usage (cache_id, paths, nar_bytes, stored_bytes, last_push_at)
    SELECT c.id,
           (SELECT count(*) FROM paths AS p WHERE p.cache_id = c.id),
           (SELECT coalesce(sum(p.nar_size), 0) FROM paths AS p WHERE p.cache_id = c.id),
           (SELECT coalesce(sum(n.file_size), 0) FROM nars AS n
             WHERE n.file_hash IN (SELECT p.file_hash FROM paths AS p WHERE p.cache_id = c.id)),
           (SELECT max(p.created_at) FROM paths AS p WHERE p.cache_id = c.id)
    FROM caches AS c;
  CREATE FUNCTION niche_caches_usage() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO cache_usage (cache_id, paths, nar_bytes, stored_bytes) VALUES (NEW.id, 0, 0, 0);
    RETURN NULL;
  END $$;
  CREATE TRIGGER caches_usage AFTER INSERT ON caches FOR EACH ROW EXECUTE FUNCTION niche_caches_usage();
  CREATE FUNCTION niche_cache_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    DELETE FROM cache_usage WHERE cache_id = OLD.id;
    RETURN NULL;
  END $$;
  CREATE TRIGGER caches_usage_delete AFTER DELETE ON caches FOR EACH ROW
    EXECUTE FUNCTION niche_cache_deleted();
  -- After an insert (ON CONFLICT DO NOTHING must not count a row it did not insert); before a delete, so
  -- that a statement deleting several paths of one NAR file sees the ones it has not deleted yet.
  CREATE FUNCTION niche_path_added() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE cache_usage SET paths = paths + 1, nar_bytes = nar_bytes + NEW.nar_size,
        last_push_at = greatest(last_push_at, NEW.created_at)
      WHERE cache_id = NEW.cache_id;
    IF NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = NEW.file_hash AND p.cache_id = NEW.cache_id
                     AND p.hash_part <> NEW.hash_part) THEN
      UPDATE cache_usage SET stored_bytes = stored_bytes +
          (SELECT n.file_size FROM nars AS n WHERE n.file_hash = NEW.file_hash)
        WHERE cache_id = NEW.cache_id;
    END IF;
    RETURN NULL;
  END $$;
  CREATE TRIGGER paths_usage_insert AFTER INSERT ON paths FOR EACH ROW EXECUTE FUNCTION niche_path_added();
  CREATE FUNCTION niche_path_removed() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE cache_usage SET paths = paths - 1, nar_bytes = nar_bytes - OLD.nar_size
      WHERE cache_id = OLD.cache_id;
    IF NOT EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = OLD.file_hash AND p.cache_id = OLD.cache_id
                     AND p.hash_part <> OLD.hash_part) THEN
      UPDATE cache_usage SET stored_bytes = stored_bytes -
          (SELECT n.file_size FROM nars AS n WHERE n.file_hash = OLD.file_hash)
        WHERE cache_id = OLD.cache_id;
    END IF;
    RETURN OLD;
  END $$;
  CREATE TRIGGER paths_usage_delete BEFORE DELETE ON paths FOR EACH ROW EXECUTE FUNCTION niche_path_removed();

  -- Blob collection: since when no path and no upload has used a NAR (NULL while used).
  ALTER TABLE nars ADD COLUMN unused_since BIGINT;
  CREATE INDEX nars_unused ON nars (unused_since) WHERE unused_since IS NOT NULL;
  -- "Does a row name this blob" for blobs found in the store without one.
  CREATE INDEX nars_blob_key ON nars (blob_key);
  CREATE INDEX build_logs_blob_key ON build_logs (blob_key);

  -- Leases that let one process at a time do a job (GC), across processes and replicas; an expired lease
  -- is free (its holder died).
  CREATE TABLE leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
  );
  `,
  // 6: paths leave the usage counters once per statement, not once per row. Every row trigger updated the
  // cache's one usage row, and each update of a row already updated in the transaction leaves a version
  // that the next one must step over: GC's batch of 200 paths cost 200 updates and about 1 ms a path in
  // the trigger, and a million-path GC ran for most of an hour (docs/bench-gc.md). The statement trigger
  // sees the deleted rows as a transition table, updates each usage row once (locking it first, as the row
  // trigger did), then takes back the stored bytes of every NAR file no path of the cache still uses: after
  // the delete, with a fresh snapshot, so a path of the cache committed meanwhile with the same file counts.
  `
  DROP TRIGGER paths_usage_delete ON paths;
  DROP FUNCTION niche_path_removed();
  CREATE FUNCTION niche_paths_removed() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE cache_usage AS u SET paths = u.paths - d.n, nar_bytes = u.nar_bytes - d.bytes
      FROM (SELECT cache_id, count(*) AS n, sum(nar_size) AS bytes FROM removed_paths GROUP BY cache_id) AS d
      WHERE u.cache_id = d.cache_id;
    UPDATE cache_usage AS u SET stored_bytes = u.stored_bytes - f.bytes
      FROM (SELECT g.cache_id, sum(n.file_size) AS bytes
              FROM (SELECT DISTINCT cache_id, file_hash FROM removed_paths) AS g
              JOIN nars AS n ON n.file_hash = g.file_hash
             WHERE NOT EXISTS (SELECT 1 FROM paths AS p
                                WHERE p.file_hash = g.file_hash AND p.cache_id = g.cache_id)
             GROUP BY g.cache_id) AS f
      WHERE u.cache_id = f.cache_id;
    RETURN NULL;
  END $$;
  CREATE TRIGGER paths_usage_delete AFTER DELETE ON paths REFERENCING OLD TABLE AS removed_paths
    FOR EACH STATEMENT EXECUTE FUNCTION niche_paths_removed();
  `,
  // 7: search by name (GET /api/v1/caches/<name>/paths?name=…): an index on the name, what follows
  // "<hash>-" in the store path, in byte order, so a prefix is a range of it. PATH_NAME_EXPRESSION in
  // postgres-metadata-store.ts must stay the same expression for the planner to use the index.
  `
  CREATE INDEX paths_name ON paths (
    cache_id, (substr(store_path, strpos(store_path, '/' || hash_part || '-') + 34) COLLATE "C"), hash_part
  );
  `,
];
