// A synthetic cache on disk for the benchmarks that need many paths (bench/gc.ts, bench/scale.ts): a niche
// data directory whose cache `main` holds the paths of bench/gc-data.ts, written straight into SQLite or
// into a PostgreSQL database of its own, and copies of it, so every measured run starts from the same
// state. The first `niche serve` on the directory creates the schema and the cache (with its signing
// key); the paths are then bulk-loaded (gc-data.ts says why not through the HTTP API).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { findPostgres } from '../test/helpers/postgres.js';
import { loadPostgres, loadSqlite, writeBlobs, type GcData } from './gc-data.js';
import { log } from './proc.js';
import { startNiche } from './servers.js';

export type Backend = 'sqlite' | 'postgres';

export interface SyntheticCache {
  readonly backend: Backend;
  /** The template's data directory (a PostgreSQL template also has a database: `url`). */
  readonly dataDir: string;
  readonly url: string | undefined;
  readonly adminUrl: string | undefined;
  readonly loadSeconds: number;
  readonly blobSeconds: number;
  /** Where its copies go. */
  readonly root: string;
  /** A name unique to this template among the databases (PostgreSQL). */
  readonly tag: string;
}

export interface CacheCopy {
  readonly dataDir: string;
  /** The environment that points niche at the copy (its database). */
  readonly env: NodeJS.ProcessEnv;
  /** Removes the copy (and its database) unless `keep`. */
  drop(): Promise<void>;
}

export interface PrepareOptions {
  readonly backend: Backend;
  readonly data: GcData;
  /** The compiled bin (bench/servers.ts buildNiche). */
  readonly main: string;
  readonly repo: string;
  /** A directory for the template and its copies (removed first). */
  readonly root: string;
  /** Short and lowercase: goes into database names. */
  readonly tag: string;
  /** The environment of the niche processes. */
  readonly env: NodeJS.ProcessEnv;
  /** Write an empty blob file per NAR file (GC and fsck look at them; narinfo answers do not). */
  readonly blobs: boolean;
}

export async function prepareCache(options: PrepareOptions): Promise<SyntheticCache> {
  const { backend, data, root } = options;
  const dataDir = join(root, 'template');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  let url: string | undefined;
  let adminUrl: string | undefined;
  const env: NodeJS.ProcessEnv = { ...options.env, NICHE_GC_INTERVAL: 'off' };
  if (backend === 'postgres') {
    const found = await findPostgres();
    if ('skip' in found) throw new Error(found.skip);
    adminUrl = found.url;
    url = await createDatabase(adminUrl, `${options.tag}_tpl`);
    env.NICHE_DATABASE = 'postgres';
    env.NICHE_DATABASE_URL = url;
  }
  const server = await startNiche({
    repo: options.repo,
    dataDir,
    logFile: join(root, 'bootstrap.log'),
    compiledMain: options.main,
    env,
  });
  await server.stop();
  let started = performance.now();
  if (backend === 'sqlite') {
    const file = join(dataDir, 'niche.sqlite');
    loadSqlite(file, data, sqliteCacheId(file));
  } else {
    await loadPostgres(url as string, data, await postgresCacheId(url as string));
  }
  const loadSeconds = (performance.now() - started) / 1000;
  log(`  ${backend}: ${data.count} paths loaded in ${loadSeconds.toFixed(1)} s`);
  started = performance.now();
  mkdirSync(join(dataDir, 'blobs'), { recursive: true });
  if (options.blobs) {
    writeBlobs(join(dataDir, 'blobs'), data);
    log(`  ${data.files.hash.length + data.orphans.length} blob files written`);
  }
  const blobSeconds = (performance.now() - started) / 1000;
  return { backend, dataDir, url, adminUrl, loadSeconds, blobSeconds, root, tag: options.tag };
}

let copies = 0;

/** A copy of the template: the database copied, the blob files hard-linked. */
export async function copyCache(
  template: SyntheticCache,
  env: NodeJS.ProcessEnv,
  keep = false,
): Promise<CacheCopy> {
  copies += 1;
  const dataDir = join(template.root, `copy-${copies}`);
  rmSync(dataDir, { recursive: true, force: true });
  mkdirSync(dataDir, { recursive: true });
  if (existsSync(join(template.dataDir, 'blobs')))
    execFileSync('cp', ['-al', join(template.dataDir, 'blobs'), join(dataDir, 'blobs')]);
  const copyEnv: NodeJS.ProcessEnv = { ...env };
  let url: string | undefined;
  if (template.backend === 'sqlite') {
    copyFileSync(join(template.dataDir, 'niche.sqlite'), join(dataDir, 'niche.sqlite'));
  } else {
    url = await createDatabase(
      template.adminUrl as string,
      `${template.tag}_c${copies}`,
      databaseName(template.url as string),
    );
    copyEnv.NICHE_DATABASE = 'postgres';
    copyEnv.NICHE_DATABASE_URL = url;
  }
  return {
    dataDir,
    env: copyEnv,
    async drop() {
      if (keep) return;
      rmSync(dataDir, { recursive: true, force: true });
      if (url !== undefined) await dropDatabase(template.adminUrl as string, url);
    },
  };
}

/** Removes the template (directory and database). */
export async function dropCache(template: SyntheticCache): Promise<void> {
  rmSync(template.root, { recursive: true, force: true });
  if (template.url !== undefined) await dropDatabase(template.adminUrl as string, template.url);
}

function sqliteCacheId(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare("SELECT id FROM caches WHERE name = 'main'").get() as { id: number }).id;
  } finally {
    db.close();
  }
}

async function postgresCacheId(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: string }>("SELECT id FROM caches WHERE name = 'main'");
    return Number(rows[0]?.id);
  } finally {
    await client.end();
  }
}

function databaseName(url: string): string {
  return new URL(url).pathname.slice(1);
}

async function adminQuery(adminUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function dropDatabase(adminUrl: string, url: string): Promise<void> {
  await adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${databaseName(url)} WITH (FORCE)`);
}

async function createDatabase(adminUrl: string, suffix: string, template?: string): Promise<string> {
  const name = `niche_bench_${process.pid}_${suffix}`;
  await adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await adminQuery(
    adminUrl,
    `CREATE DATABASE ${name}${template === undefined ? '' : ` TEMPLATE ${template}`}`,
  );
  const parsed = new URL(adminUrl);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}
