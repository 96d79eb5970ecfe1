// `niche import` from a directory laid out as `nix copy --to file://` writes it, run in-process through
// main(): good paths go in (verified, signed, original signatures kept), every kind of bad path is skipped
// with its reason (and its dependants with theirs), and a second run after the source is fixed finishes
// the job without opening the NARs of what is already there.
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { openMetadata } from '../../src/app/data-dir.js';
import { main } from '../../src/cli/main.js';
import { parseNarInfo } from '../../src/nix/narinfo.js';
import { countValidSignatures, PublicKey, SecretKey, signNarInfo } from '../../src/nix/signing.js';
import { fakeBaseName, fixture, narInfoText, type NarFixture } from '../helpers/nar-fixtures.js';
import { startTestServer } from '../helpers/server.js';
import { makeTempDir, type TempDir } from '../helpers/tmp.js';

const EX_DATAERR = 65;
const EX_NOINPUT = 66;
const EXIT_INTERRUPTED = 130;
const CLI_ENTRY = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

let work: TempDir;
let counter = 0;

before(async () => {
  work = await makeTempDir('import');
});
after(async () => {
  await work.cleanup();
});

interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function niche(...args: string[]): Promise<CliRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await main(args, { stdout, stderr, env: {} });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

/** A fresh data directory with an empty cache `main`. */
async function dataDirWithCache(): Promise<string> {
  const data = join(work.path, `data-${++counter}`);
  const created = await niche('cache', 'create', 'main', '--data', data);
  assert.equal(created.code, 0, created.stderr);
  return data;
}

/** The `<reason>` of each `skipped <path>: <reason>: …` line, by path. */
function skips(stderr: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const match of stderr.matchAll(/^skipped (\S+): ([a-z-]+): /gm)) {
    found.set(match[1] ?? '', match[2] ?? '');
  }
  return found;
}

/** The numbers of the summary printed on stdout, by label. */
function summary(stdout: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const match of stdout.matchAll(/^\s*([a-z -]+(?:\(interrupted\))?): (\d+)$/gm)) {
    found.set((match[1] ?? '').trim(), Number(match[2]));
  }
  return found;
}

/**
 * A GET on a connection of its own that the server closes after answering: a kept-alive connection that
 * turns idle just as the server stops would hold the stop up until the keep-alive timeout (65 s).
 */
async function get(url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false, headers: { connection: 'close' } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) });
      });
      response.on('error', reject);
    }).on('error', reject);
  });
}

interface SourcePath {
  readonly baseName: string;
  readonly fx: NarFixture;
  readonly narInfo: string;
}

/** A binary cache directory as `nix copy --to file://` leaves it. */
class SourceTree {
  constructor(readonly dir: string) {}

  static async create(storeDir = '/nix/store'): Promise<SourceTree> {
    const dir = join(work.path, `source-${++counter}`);
    await mkdir(join(dir, 'nar'), { recursive: true });
    await writeFile(join(dir, 'nix-cache-info'), `StoreDir: ${storeDir}\n`);
    return new SourceTree(dir);
  }

  /** Writes a path's narinfo and NAR file; returns what was written. */
  async add(
    label: string,
    contents: string,
    options: {
      compression?: 'xz' | 'zstd' | 'none';
      references?: readonly string[];
      selfReference?: boolean;
      signWith?: SecretKey;
      narInfo?: (text: string) => string;
      withoutNar?: boolean;
    } = {},
  ): Promise<SourcePath> {
    const baseName = fakeBaseName(label);
    const fx = await fixture(contents, options.compression ?? 'xz');
    const references = [...(options.references ?? []), ...(options.selfReference === true ? [baseName] : [])];
    let text = narInfoText(baseName, fx, { references });
    if (options.signWith !== undefined) {
      text += `Sig: ${signNarInfo(parseNarInfo(text), options.signWith)}\n`;
    }
    text = options.narInfo?.(text) ?? text;
    await writeFile(join(this.dir, `${hashOf(baseName)}.narinfo`), text);
    if (options.withoutNar !== true) await this.writeNar({ fx });
    return { baseName, fx, narInfo: text };
  }

  writeNar(path: { fx: NarFixture }, bytes: Buffer = path.fx.file): Promise<void> {
    return writeFile(join(this.dir, 'nar', path.fx.fileName), bytes);
  }

  removeNar(path: { fx: NarFixture }): Promise<void> {
    return rm(join(this.dir, 'nar', path.fx.fileName));
  }

  removeNarInfo(baseName: string): Promise<void> {
    return rm(join(this.dir, `${hashOf(baseName)}.narinfo`));
  }

  writeRaw(name: string, text: string): Promise<void> {
    return writeFile(join(this.dir, name), text);
  }
}

function hashOf(baseName: string): string {
  return baseName.slice(0, 32);
}

function storePath(baseName: string): string {
  return `/nix/store/${baseName}`;
}

async function pathsInCache(data: string): Promise<Map<string, readonly string[]>> {
  const db = await openMetadata(data);
  try {
    const cache = await db.getCache('main');
    assert.ok(cache);
    const rows = await db.listPaths(cache.id, { limit: 10_000 });
    return new Map(rows.map((row) => [row.path.storePath, row.path.signatures]));
  } finally {
    await db.close();
  }
}

describe('niche import from a directory', () => {
  it('imports the good paths, skips each bad one with its reason, and a second run finishes', async () => {
    const upstream = SecretKey.generate('upstream.example-1');
    const source = await SourceTree.create();
    const leaf = await source.add('leaf', 'the leaf\n', { signWith: upstream });
    const mid = await source.add('mid', 'the middle\n', { compression: 'zstd', references: [leaf.baseName] });
    const top = await source.add('top', 'the top\n', {
      compression: 'none',
      references: [mid.baseName, leaf.baseName],
      selfReference: true,
    });
    // A NAR file whose bytes changed after the narinfo was written (in the file contents, so it is still
    // a valid NAR: only the hashes can tell).
    const corrupt = await source.add('corrupt', 'will be corrupted\n', { compression: 'none' });
    const flipped = Buffer.from(corrupt.fx.file);
    const at = flipped.indexOf('corrupted');
    flipped[at] = (flipped[at] ?? 0) ^ 0x20;
    await source.writeNar(corrupt, flipped);
    const needsCorrupt = await source.add('needs-corrupt', 'depends on the corrupt one\n', {
      references: [corrupt.baseName],
    });
    const noNar = await source.add('no-nar', 'its NAR is missing\n', { withoutNar: true });
    const elsewhere = fakeBaseName('elsewhere');
    const needsElsewhere = await source.add('needs-elsewhere', 'depends on a path not here\n', {
      references: [elsewhere],
    });
    const gzip = await source.add('gzip', 'claims gzip\n', {
      compression: 'none',
      narInfo: (text) => text.replace('Compression: none', 'Compression: gzip'),
    });
    const garbage = fakeBaseName('garbage');
    await source.writeRaw(`${hashOf(garbage)}.narinfo`, 'this is not a narinfo\n');
    const wrongName = fakeBaseName('wrong-name');
    await source.writeRaw(`${hashOf(wrongName)}.narinfo`, leaf.narInfo);

    const data = await dataDirWithCache();
    const first = await niche('import', source.dir, '--cache', 'main', '--data', data);
    assert.equal(first.code, EX_DATAERR, first.stderr);
    assert.deepEqual(
      skips(first.stderr),
      new Map([
        [storePath(corrupt.baseName), 'hash-mismatch'],
        [storePath(needsCorrupt.baseName), 'reference-skipped'],
        [storePath(noNar.baseName), 'nar-missing'],
        [storePath(needsElsewhere.baseName), 'reference-missing'],
        [storePath(gzip.baseName), 'compression-unsupported'],
        [`${hashOf(garbage)}.narinfo`, 'narinfo-invalid'],
        [`${hashOf(wrongName)}.narinfo`, 'narinfo-invalid'],
      ]),
    );
    assert.match(
      first.stderr,
      new RegExp(
        `skipped ${storePath(needsCorrupt.baseName)}: reference-skipped: its reference ${storePath(corrupt.baseName)} was skipped`,
      ),
    );
    assert.match(
      first.stderr,
      new RegExp(`reference-missing: it references ${elsewhere}, in neither the source nor cache main`),
    );
    assert.match(first.stderr, /--allow-skips/);
    const counts = summary(first.stdout);
    assert.equal(counts.get('imported'), 3);
    assert.equal(counts.get('already present'), 0);
    assert.equal(counts.get('skipped'), 7);
    assert.equal(counts.get('narinfo-invalid'), 2);
    assert.equal(counts.get('hash-mismatch'), 1);

    const imported = await pathsInCache(data);
    assert.deepEqual([...imported.keys()].sort(), [leaf, mid, top].map((p) => storePath(p.baseName)).sort());

    // Served like any upload: signed by the cache's key, the upstream signature kept, the NAR as it was.
    const t = await startTestServer({ dataDir: data });
    try {
      const response = await get(`${t.url}/main/${hashOf(leaf.baseName)}.narinfo`);
      const text = response.body.toString();
      assert.equal(response.status, 200, text);
      const served = parseNarInfo(text);
      const keys = await t.server.service.keys((await t.server.stores.db.getCache('main')) ?? assert.fail());
      const nicheKey = PublicKey.parse(keys.publicKeys[0] ?? assert.fail('no key'));
      assert.equal(served.signatures.length, 2);
      assert.ok(served.signatures.some((sig) => sig.startsWith('upstream.example-1:')));
      assert.equal(countValidSignatures(served, [nicheKey, upstream.publicKey]), 2);
      const nar = await get(`${t.url}/main/${served.url}`);
      assert.equal(nar.status, 200);
      assert.deepEqual(nar.body, leaf.fx.file);
    } finally {
      await t.stop();
    }

    // Fix the source. The NARs of the paths already imported are removed from it: a second run that
    // opened them would skip them as nar-missing.
    await source.writeNar(corrupt);
    await source.writeNar(noNar);
    await source.add('elsewhere', 'now it is here\n');
    await source.removeNarInfo(gzip.baseName);
    await source.removeNarInfo(garbage);
    await source.removeNarInfo(wrongName);
    for (const done of [leaf, mid, top]) await source.removeNar(done);

    const second = await niche(
      'import',
      `file://${source.dir}`,
      '--cache',
      'main',
      '--data',
      data,
      '--jobs',
      '1',
    );
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(skips(second.stderr), new Map());
    const again = summary(second.stdout);
    assert.equal(again.get('imported'), 5);
    assert.equal(again.get('already present'), 3);
    assert.equal(again.get('skipped'), 0);
    assert.equal((await pathsInCache(data)).size, 8);

    const third = await niche('import', source.dir, '--cache', 'main', '--data', data);
    assert.equal(third.code, 0, third.stderr);
    assert.equal(summary(third.stdout).get('imported'), 0);
    assert.equal(summary(third.stdout).get('already present'), 8);
  });

  it('reports without writing anything on --dry-run, and --allow-skips exits 0', async () => {
    const source = await SourceTree.create();
    const leaf = await source.add('dry-leaf', 'leaf\n');
    await source.add('dry-top', 'top\n', { references: [leaf.baseName] });
    const noNar = await source.add('dry-no-nar', 'missing NAR\n', { withoutNar: true });
    await source.add('dry-needs-no-nar', 'depends on the missing one\n', { references: [noNar.baseName] });

    const data = await dataDirWithCache();
    const dry = await niche('import', source.dir, '--cache', 'main', '--data', data, '--dry-run');
    assert.equal(dry.code, EX_DATAERR, dry.stderr);
    assert.match(dry.stderr, /4 paths in the source: 0 already in cache main, 4 to import \(dry run/);
    const counts = summary(dry.stdout);
    assert.equal(counts.get('would import'), 2);
    assert.equal(counts.get('would skip'), 2);
    assert.equal(counts.get('nar-missing'), 1);
    assert.equal(counts.get('reference-skipped'), 1);
    assert.equal((await pathsInCache(data)).size, 0);

    const allowed = await niche('import', source.dir, '--cache', 'main', '--data', data, '--allow-skips');
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.equal(summary(allowed.stdout).get('imported'), 2);
    assert.equal((await pathsInCache(data)).size, 2);

    const dryAgain = await niche('import', source.dir, '--cache', 'main', '--data', data, '--dry-run');
    assert.equal(summary(dryAgain.stdout).get('already present'), 2);
  });

  it('keeps a path it already has with other contents, and imports what depends on it', async () => {
    const data = await dataDirWithCache();
    const first = await SourceTree.create();
    await first.add('shared', 'first build\n');
    assert.equal((await niche('import', first.dir, '--cache', 'main', '--data', data)).code, 0);

    const second = await SourceTree.create();
    const shared = await second.add('shared', 'a different, non-reproducible build\n');
    const user = await second.add('user', 'uses shared\n', { references: [shared.baseName] });
    const run = await niche('import', second.dir, '--cache', 'main', '--data', data);
    assert.equal(run.code, EX_DATAERR, run.stderr);
    assert.deepEqual(skips(run.stderr), new Map([[storePath(shared.baseName), 'conflict']]));
    assert.equal(summary(run.stdout).get('imported'), 1);
    assert.ok((await pathsInCache(data)).has(storePath(user.baseName)));
  });

  it('takes a reference only for exactly the path it names, in the source or in the cache', async () => {
    const data = await dataDirWithCache();
    const held = await SourceTree.create();
    const inCache = await held.add('exact-held', 'held by the cache\n');
    assert.equal((await niche('import', held.dir, '--cache', 'main', '--data', data)).code, 0);

    const source = await SourceTree.create();
    const base = await source.add('exact-base', 'in the source\n');
    const renamedInSource = `${hashOf(base.baseName)}-wrongname`;
    const renamedInCache = `${hashOf(inCache.baseName)}-wrongname`;
    const bySource = await source.add('exact-by-source', 'refers to a renamed source path\n', {
      references: [base.baseName, renamedInSource],
    });
    const byCache = await source.add('exact-by-cache', 'refers to a renamed cached path\n', {
      references: [renamedInCache],
    });
    const selfName = fakeBaseName('exact-self');
    const bySelf = await source.add('exact-self', 'refers to itself by another name\n', {
      references: [`${hashOf(selfName)}-othername`],
    });
    const good = await source.add('exact-good', 'refers to both, correctly\n', {
      references: [base.baseName, inCache.baseName],
      selfReference: true,
    });
    const run = await niche('import', source.dir, '--cache', 'main', '--data', data);
    assert.equal(run.code, EX_DATAERR, run.stderr);
    assert.deepEqual(
      skips(run.stderr),
      new Map([
        [storePath(bySource.baseName), 'reference-missing'],
        [storePath(byCache.baseName), 'reference-missing'],
        [storePath(bySelf.baseName), 'reference-missing'],
      ]),
    );
    assert.match(run.stderr, new RegExp(`it references ${renamedInSource}, in neither`));
    const paths = await pathsInCache(data);
    assert.ok(paths.has(storePath(base.baseName)));
    assert.ok(paths.has(storePath(good.baseName)));
    assert.equal(paths.size, 3);
  });

  it('skips paths whose references form a cycle', async () => {
    const source = await SourceTree.create();
    const a = fakeBaseName('cycle-a');
    const b = fakeBaseName('cycle-b');
    const fxA = await fixture('a\n');
    const fxB = await fixture('b\n');
    await source.writeRaw(`${hashOf(a)}.narinfo`, narInfoText(a, fxA, { references: [b] }));
    await source.writeRaw(`${hashOf(b)}.narinfo`, narInfoText(b, fxB, { references: [a] }));
    await source.writeNar({ fx: fxA });
    await source.writeNar({ fx: fxB });
    await source.add('independent', 'no references\n');
    const data = await dataDirWithCache();
    const run = await niche('import', source.dir, '--cache', 'main', '--data', data);
    assert.equal(run.code, EX_DATAERR);
    assert.deepEqual(
      skips(run.stderr),
      new Map([
        [storePath(a), 'reference-cycle'],
        [storePath(b), 'reference-cycle'],
      ]),
    );
    assert.equal(summary(run.stdout).get('imported'), 1);
  });

  it('stops on SIGINT after the paths in progress, and the next run imports the rest', async () => {
    const source = await SourceTree.create();
    const count = 300;
    for (let i = 0; i < count; i++) await source.add(`many-${i}`, `path ${i}\n`, { compression: 'none' });
    const data = await dataDirWithCache();
    const args = ['import', source.dir, '--cache', 'main', '--data', data, '--jobs', '1'];
    const child = spawn(process.execPath, ['--import', 'tsx', CLI_ENTRY, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let signalled = false;
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      if (!signalled && /\d+ to import/.test(stderr)) signalled = child.kill('SIGINT');
    });
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, EXIT_INTERRUPTED, stderr);
    assert.match(stderr, /interrupted: finishing the paths in progress/);
    const interrupted = summary(stdout);
    const notStarted = interrupted.get('not started (interrupted)') ?? 0;
    assert.ok(notStarted > 0, stdout);
    assert.equal((interrupted.get('imported') ?? 0) + notStarted, count);

    const rest = await niche(...args);
    assert.equal(rest.code, 0, rest.stderr);
    assert.equal(summary(rest.stdout).get('imported'), notStarted);
    assert.equal((await pathsInCache(data)).size, count);
  });

  it('refuses what it cannot import at all, with a reason and an exit code', async () => {
    const data = await dataDirWithCache();
    const source = await SourceTree.create();
    await source.add('alone', 'alone\n');

    const noCache = await niche('import', source.dir, '--cache', 'ghost', '--data', data);
    assert.equal(noCache.code, EX_NOINPUT);
    assert.match(noCache.stderr, /no cache named ghost; create it first with niche cache create ghost/);

    const noSource = await niche('import', join(work.path, 'nowhere'), '--cache', 'main', '--data', data);
    assert.equal(noSource.code, EX_NOINPUT);
    assert.match(noSource.stderr, /cannot read the source/);

    const empty = join(work.path, `empty-${++counter}`);
    await mkdir(empty);
    const notACache = await niche('import', empty, '--cache', 'main', '--data', data);
    assert.equal(notACache.code, EX_NOINPUT);
    assert.match(notACache.stderr, /is not a binary cache/);

    const otherStore = await SourceTree.create('/gnu/store');
    const wrongStore = await niche('import', otherStore.dir, '--cache', 'main', '--data', data);
    assert.equal(wrongStore.code, EX_DATAERR);
    assert.match(
      wrongStore.stderr,
      /is a cache for the store \/gnu\/store, but cache main is for \/nix\/store/,
    );

    const http = await niche('import', 'https://cache.example.org', '--cache', 'main', '--data', data);
    assert.equal(http.code, EX_DATAERR);
    assert.match(http.stderr, /cannot import from https:\/\/ sources/);

    const jobs = await niche('import', source.dir, '--cache', 'main', '--data', data, '--jobs', '0');
    assert.equal(jobs.code, EX_DATAERR);
    assert.match(jobs.stderr, /--jobs expects a number from 1 to 256/);

    assert.equal((await pathsInCache(data)).size, 0);
  });
});
