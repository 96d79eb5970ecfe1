// The SQLite schema, as an ordered list of migrations. Migration i (0-based) takes a database from
// `PRAGMA user_version` i to i + 1; each runs in its own transaction together with that bump, so a crash
// leaves the schema at a whole version. Never edit a shipped migration: append a new one.
//
// The shape is meant to carry over to PostgreSQL unchanged: dates are integer milliseconds since the epoch,
// booleans are 0/1 integers, lists of strings (references, signatures, permissions) are JSON arrays in
// text columns. Tables are STRICT so SQLite enforces the declared types as PostgreSQL would.

export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE caches (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    is_public INTEGER NOT NULL CHECK (is_public IN (0, 1)),
    priority INTEGER NOT NULL,
    store_dir TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE signing_keys (
    id INTEGER PRIMARY KEY,
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    secret_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    UNIQUE (cache_id, name)
  ) STRICT;

  CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
  ) STRICT;

  -- position keeps the scopes in the order they were given.
  CREATE TABLE token_scopes (
    token_id INTEGER NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    cache_pattern TEXT NOT NULL,
    permissions TEXT NOT NULL,
    PRIMARY KEY (token_id, position)
  ) STRICT, WITHOUT ROWID;

  -- One row per stored NAR file, shared by every cache that holds it.
  CREATE TABLE nars (
    file_hash TEXT PRIMARY KEY,
    file_size INTEGER NOT NULL,
    compression TEXT NOT NULL,
    nar_hash TEXT NOT NULL,
    nar_size INTEGER NOT NULL,
    blob_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;

  -- NARs uploaded to a cache whose narinfo has not arrived yet.
  CREATE TABLE nar_uploads (
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    file_hash TEXT NOT NULL REFERENCES nars (file_hash),
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (cache_id, file_hash)
  ) STRICT, WITHOUT ROWID;
  -- Serves the foreign key (deleting a NAR) and GC's "is this NAR still used anywhere".
  CREATE INDEX nar_uploads_file_hash ON nar_uploads (file_hash);

  -- "references" is an SQL keyword, hence refs.
  CREATE TABLE paths (
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    hash_part TEXT NOT NULL,
    store_path TEXT NOT NULL,
    file_hash TEXT NOT NULL REFERENCES nars (file_hash),
    nar_hash TEXT NOT NULL,
    nar_size INTEGER NOT NULL,
    refs TEXT NOT NULL,
    deriver TEXT,
    ca TEXT,
    signatures TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (cache_id, hash_part)
  ) STRICT;
  -- Serves getNar (is the NAR referenced by a path of this cache), the foreign key and GC.
  CREATE INDEX paths_file_hash ON paths (file_hash, cache_id);
  `,
  `
  -- Upstream caches' public keys (JSON array): paths they signed need not be pushed here.
  ALTER TABLE caches ADD COLUMN upstream_keys TEXT NOT NULL DEFAULT '[]';

  -- Reverse references, for "who references this path" (refusing deletes that break closures, GC).
  CREATE TABLE path_refs (
    cache_id INTEGER NOT NULL,
    ref_hash TEXT NOT NULL,
    hash_part TEXT NOT NULL,
    PRIMARY KEY (cache_id, ref_hash, hash_part),
    FOREIGN KEY (cache_id, hash_part) REFERENCES paths (cache_id, hash_part) ON DELETE CASCADE
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX path_refs_referrer ON path_refs (cache_id, hash_part);

  INSERT INTO path_refs (cache_id, ref_hash, hash_part)
    SELECT DISTINCT p.cache_id, substr(j.value, 1, 32), p.hash_part
    FROM paths AS p, json_each(p.refs) AS j
    WHERE substr(j.value, 1, 32) <> p.hash_part;
  `,
  `
  -- Build logs (nix store copy-log), one per derivation and cache; the log itself is a blob.
  CREATE TABLE build_logs (
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    drv TEXT NOT NULL,
    blob_key TEXT NOT NULL,
    compression TEXT NOT NULL,
    size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (cache_id, drv)
  ) STRICT, WITHOUT ROWID;
  -- "Does a path of this cache still name this derivation" when a path is deleted.
  CREATE INDEX paths_deriver ON paths (deriver, cache_id);
  `,
  `
  -- Realisations of content-addressed derivations' outputs (ca-derivations), signed by the cache.
  CREATE TABLE realisations (
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    out_path TEXT NOT NULL,
    dependents TEXT NOT NULL,
    signatures TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (cache_id, id)
  ) STRICT, WITHOUT ROWID;
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
  ALTER TABLE paths ADD COLUMN last_access_at INTEGER;
  ALTER TABLE caches ADD COLUMN retention_ms INTEGER;
  ALTER TABLE caches ADD COLUMN max_size INTEGER;

  -- Named roots: a pin keeps its path and the path's whole closure; re-pinning a name moves it.
  CREATE TABLE pins (
    cache_id INTEGER NOT NULL REFERENCES caches (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    hash_part TEXT NOT NULL,
    store_path TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (cache_id, name)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX pins_path ON pins (cache_id, hash_part);

  -- Path count, NAR bytes and stored bytes (each NAR file once) per cache, kept by triggers so every
  -- change of paths, however made, moves them in the same transaction.
  CREATE TABLE cache_usage (
    cache_id INTEGER PRIMARY KEY REFERENCES caches (id) ON DELETE CASCADE,
    paths INTEGER NOT NULL,
    nar_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    last_push_at INTEGER
  ) STRICT;
  INSERT INTO cache_usage (cache_id, paths, nar_bytes, stored_bytes, last_push_at)
    SELECT c.id,
           (SELECT count(*) FROM paths AS p WHERE p.cache_id = c.id),
           (SELECT coalesce(sum(p.nar_size), 0) FROM paths AS p WHERE p.cache_id = c.id),
           (SELECT coalesce(sum(n.file_size), 0) FROM nars AS n
             WHERE n.file_hash IN (SELECT p.file_hash FROM paths AS p WHERE p.cache_id = c.id)),
           (SELECT max(p.created_at) FROM paths AS p WHERE p.cache_id = c.id)
    FROM caches AS c;
  CREATE TRIGGER caches_usage AFTER INSERT ON caches BEGIN
    INSERT INTO cache_usage (cache_id, paths, nar_bytes, stored_bytes) VALUES (NEW.id, 0, 0, 0);
  END;
  CREATE TRIGGER paths_usage_insert AFTER INSERT ON paths BEGIN
    UPDATE cache_usage SET paths = paths + 1, nar_bytes = nar_bytes + NEW.nar_size,
      last_push_at = max(coalesce(last_push_at, 0), NEW.created_at),
      stored_bytes = stored_bytes + CASE
        WHEN EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = NEW.file_hash AND p.cache_id = NEW.cache_id
                       AND p.hash_part <> NEW.hash_part) THEN 0
        ELSE (SELECT n.file_size FROM nars AS n WHERE n.file_hash = NEW.file_hash) END
    WHERE cache_id = NEW.cache_id;
  END;
  CREATE TRIGGER paths_usage_delete AFTER DELETE ON paths BEGIN
    UPDATE cache_usage SET paths = paths - 1, nar_bytes = nar_bytes - OLD.nar_size,
      stored_bytes = stored_bytes - CASE
        WHEN EXISTS (SELECT 1 FROM paths AS p WHERE p.file_hash = OLD.file_hash AND p.cache_id = OLD.cache_id)
          THEN 0
        ELSE (SELECT n.file_size FROM nars AS n WHERE n.file_hash = OLD.file_hash) END
    WHERE cache_id = OLD.cache_id;
  END;

  -- Blob collection: since when no path and no upload has used a NAR (NULL while used).
  ALTER TABLE nars ADD COLUMN unused_since INTEGER;
  CREATE INDEX nars_unused ON nars (unused_since) WHERE unused_since IS NOT NULL;
  -- "Does a row name this blob" for blobs found in the store without one.
  CREATE INDEX nars_blob_key ON nars (blob_key);
  CREATE INDEX build_logs_blob_key ON build_logs (blob_key);

  -- Leases that let one process at a time do a job (GC), across processes and replicas; an expired lease
  -- is free (its holder died).
  CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;
  `,
  `
  -- Search by name (GET /api/v1/caches/<name>/paths?name=…): the name is what follows "<hash>-" in the
  -- store path, a virtual column (computed, not stored) with an index, so a prefix is a range of it.
  ALTER TABLE paths ADD COLUMN name TEXT
    GENERATED ALWAYS AS (substr(store_path, instr(store_path, '/' || hash_part || '-') + 34)) VIRTUAL;
  CREATE INDEX paths_name ON paths (cache_id, name, hash_part);
  `,
];
