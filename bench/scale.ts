// `npm run bench:scale`: niche serving a cache of a million paths (issue 15), against the same server
// with a cache of a thousand, on SQLite and on PostgreSQL. The caches are bench/gc-data.ts's synthetic
// ones (bench/synthetic-cache.ts writes them straight into the database; no blob files: only narinfos
// and presence checks are asked for). For each backend and size:
// - start-up: `niche serve` spawned on the full database until it answers nix-cache-info (polled every
//   5 ms), SCALE_STARTS times, and the RSS it has then;
// - narinfo hits: wrk with SCALE_CONNECTIONS connections asks for the narinfos of SCALE_WORKING_SET
//   random paths of the cache (all of them for the small cache), each once per cycle, so with a million
//   paths nearly every answer comes from the database, not from the in-memory narinfo cache (10 000
//   entries). The server runs on CPU 0, wrk on CPU 1; the small and the large server alternate,
//   SCALE_ROUNDS rounds each, and the median rate counts. Then one c=1 run each (server and wrk both on
//   CPU 0, as bench/run.ts does: see its BENCH_PIN_C1 for why) for the latency tail;
// - `POST /api/v1/caches/main/missing` with SCALE_MISSING store paths, half of them in the cache (random)
//   and half not: wall time at the client, SCALE_MISSING_RUNS timed runs after two warm-ups; the answer
//   is checked;
// - the server's peak RSS over all of it (VmHWM).
// Writes bench/out/scale.json and bench/out/scale.md (a table for docs/bench-scale.md).
//
// Parameters (environment variables):
//   SCALE_SIZES=1000,1000000   cache sizes; the first is the baseline of the ratios
//   SCALE_BACKENDS=sqlite,postgres
//   SCALE_CONNECTIONS=64
//   SCALE_SECONDS=10           seconds per wrk round
//   SCALE_ROUNDS=3             rounds per server
//   SCALE_WORKING_SET=200000   distinct narinfos asked for (at most the cache's size)
//   SCALE_STARTS=5
//   SCALE_MISSING=10000        paths per presence check (the API's limit)
//   SCALE_MISSING_RUNS=10
//   SCALE_SEED=1
//   SCALE_QUIET_WAIT_S=30      before each measurement, wait up to this long for a quiet machine
//   SCALE_DIR=$TMPDIR/niche-bench-scale   (a million paths: about 1 GB on SQLite)
//   SCALE_KEEP_TMP=0

import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate, storePath, type GcData } from './gc-data.js';
import { waitForQuiet, withLoad } from './load.js';
import { elapsed, log, memoryOf, runBench, setAffinity } from './proc.js';
import { buildNiche, startNiche, type RunningServer } from './servers.js';
import { copyCache, dropCache, prepareCache, type Backend, type CacheCopy } from './synthetic-cache.js';
import { runWrk, writePaths, type WrkResult } from './wrk.js';
import { envList, envNumber, median } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');

const params = {
  sizes: envList('SCALE_SIZES', '1000,1000000').map(Number),
  backends: envList('SCALE_BACKENDS', 'sqlite,postgres') as Backend[],
  connections: envNumber('SCALE_CONNECTIONS', 64),
  seconds: envNumber('SCALE_SECONDS', 10),
  rounds: envNumber('SCALE_ROUNDS', 3),
  workingSet: envNumber('SCALE_WORKING_SET', 200_000),
  starts: envNumber('SCALE_STARTS', 5),
  missing: envNumber('SCALE_MISSING', 10_000),
  missingRuns: envNumber('SCALE_MISSING_RUNS', 10),
  seed: envNumber('SCALE_SEED', 1),
  quietWaitS: envNumber('SCALE_QUIET_WAIT_S', 30),
  dir: process.env.SCALE_DIR ?? join(tmpdir(), 'niche-bench-scale'),
  keepTmp: process.env.SCALE_KEEP_TMP === '1',
};

/** No access log, no scheduled GC: the bench measures serving. */
const ENV = { ...process.env, NICHE_ACCESS_LOG: 'off', NICHE_GC_INTERVAL: 'off' };
const MiB = 2 ** 20;
const TWO_CPUS = availableParallelism() >= 2;

/** `count` distinct indices below `below`, in random order (seeded). */
function sample(below: number, count: number, seed: number): number[] {
  const picked = Array.from({ length: below }, (_, i) => i);
  let state = seed >>> 0 || 1;
  const n = Math.min(count, below);
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const j = i + (state % (below - i));
    [picked[i], picked[j]] = [picked[j] as number, picked[i] as number];
  }
  return picked.slice(0, n);
}

interface Rate {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly otherCores: number;
}

interface SizeResult {
  readonly backend: Backend;
  readonly paths: number;
  readonly loadSeconds: number;
  readonly startMs: number[];
  readonly startMedianMs: number;
  readonly rssAtStartMiB: number;
  readonly rounds: Rate[];
  readonly hitRate: number;
  readonly c1: Rate;
  readonly missingMs: number[];
  readonly missingMedianMs: number;
  readonly peakRssMiB: number;
}

function rateOf(result: WrkResult, otherCores: number): Rate {
  return {
    requestsPerSecond: result.requestsPerSecond,
    p50Ms: result.latencyMs.p50,
    p99Ms: result.latencyMs.p99,
    maxMs: result.latencyMs.max,
    otherCores,
  };
}

async function quiet(): Promise<void> {
  await waitForQuiet({ maxOtherCores: 0.25, maxWaitS: params.quietWaitS });
}

interface Subject {
  readonly paths: number;
  readonly data: GcData;
  readonly copy: CacheCopy;
  readonly loadSeconds: number;
  readonly startMs: number[];
  rssAtStartMiB: number;
  server?: RunningServer;
  pathsFile?: string;
  readonly rounds: Rate[];
  c1?: Rate;
  readonly missingMs: number[];
}

function start(main: string, subject: Subject, pollMs = 100): Promise<RunningServer> {
  return startNiche({
    repo: REPO,
    dataDir: subject.copy.dataDir,
    logFile: join(subject.copy.dataDir, 'serve.log'),
    compiledMain: main,
    env: subject.copy.env,
    readyPollMs: pollMs,
  });
}

/** Spawn to first answer, SCALE_STARTS times. */
async function measureStarts(main: string, subject: Subject): Promise<void> {
  for (let i = 0; i < params.starts; i++) {
    await quiet();
    const server = await start(main, subject, 5);
    subject.startMs.push(performance.now() - server.spawnedAt);
    subject.rssAtStartMiB = Math.max(subject.rssAtStartMiB, memoryOf(server.pid).rss / MiB);
    await server.stop();
  }
}

async function hits(subject: Subject, seconds: number, warmup = false): Promise<Rate> {
  const server = subject.server as RunningServer;
  await quiet();
  const { value, otherCores } = await withLoad(() =>
    runWrk({
      origin: server.origin,
      pathsFile: subject.pathsFile as string,
      connections: params.connections,
      threads: 1,
      seconds,
      expect: 'ok',
      warmup,
      ...(TWO_CPUS ? { cpu: 1 } : {}),
    }),
  );
  return rateOf(value, otherCores);
}

async function c1(subject: Subject): Promise<Rate> {
  const server = subject.server as RunningServer;
  await quiet();
  const { value, otherCores } = await withLoad(() =>
    runWrk({
      origin: server.origin,
      pathsFile: subject.pathsFile as string,
      connections: 1,
      threads: 1,
      seconds: params.seconds,
      expect: 'ok',
      ...(TWO_CPUS ? { cpu: 0 } : {}),
    }),
  );
  return rateOf(value, otherCores);
}

/** One presence check of `paths`; returns the wall time and checks the answer. */
async function missingOnce(
  server: RunningServer,
  body: string,
  expected: ReadonlySet<string>,
): Promise<number> {
  const started = performance.now();
  const response = await fetch(`${server.origin}/api/v1/caches/main/missing`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  const answer = (await response.json()) as { missing?: string[] };
  const ms = performance.now() - started;
  if (response.status !== 200) throw new Error(`missing: HTTP ${response.status} ${JSON.stringify(answer)}`);
  const missing = answer.missing ?? [];
  if (missing.length !== expected.size || missing.some((path) => !expected.has(path)))
    throw new Error(`missing: ${missing.length} paths reported, ${expected.size} expected`);
  return ms;
}

async function measureMissing(subject: Subject): Promise<void> {
  const server = subject.server as RunningServer;
  const half = Math.floor(params.missing / 2);
  const present = sample(subject.paths, half, params.seed + 7).map((i) => storePath(subject.data, i));
  // Absent: valid store paths whose hash parts are not in the cache (another seed's hash parts).
  const other = generate(params.missing - present.length, params.seed + 1000);
  const absent = Array.from({ length: other.count }, (_, i) => storePath(other, i));
  const body = JSON.stringify({ paths: [...present, ...absent] });
  const expected = new Set(absent);
  for (let i = 0; i < 2; i++) await missingOnce(server, body, expected);
  for (let i = 0; i < params.missingRuns; i++) {
    await quiet();
    subject.missingMs.push(await missingOnce(server, body, expected));
  }
}

function table(results: readonly SizeResult[]): string {
  const lines = [
    '| backend | paths | narinfo hits c=' +
      String(params.connections) +
      ' | ÷ smallest | p99 c=' +
      String(params.connections) +
      ' | p99 c=1 | start-up | RSS at start | peak RSS | missing ' +
      String(params.missing) +
      ' (median / max) |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const r of results) {
    const base = results.find((b) => b.backend === r.backend && b.paths === params.sizes[0]);
    const ratio = base === undefined ? NaN : r.hitRate / base.hitRate;
    const p99 = median(r.rounds.map((round) => round.p99Ms));
    lines.push(
      `| ${r.backend} | ${r.paths.toLocaleString('en')} | ${Math.round(r.hitRate).toLocaleString('en')}/s | ` +
        `${ratio.toFixed(2)}× | ${p99.toFixed(2)} ms | ${r.c1.p99Ms.toFixed(2)} ms | ${r.startMedianMs.toFixed(0)} ms | ` +
        `${r.rssAtStartMiB.toFixed(0)} MiB | ${r.peakRssMiB.toFixed(0)} MiB | ` +
        `${r.missingMedianMs.toFixed(1)} / ${Math.max(...r.missingMs).toFixed(1)} ms |`,
    );
  }
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(OUT, { recursive: true });
  mkdirSync(params.dir, { recursive: true });
  log('building niche (tsc)');
  const mainJs = await buildNiche(REPO, join(OUT, 'build-scale'));
  const datasets = params.sizes.map((size) => {
    log(`generating ${size} paths (seed ${params.seed})`);
    return generate(size, params.seed);
  });
  const results: SizeResult[] = [];
  for (const backend of params.backends) {
    const subjects: Subject[] = [];
    const templates = [];
    try {
      for (const data of datasets) {
        log(`${backend}: loading ${data.count} paths [${elapsed(started)}]`);
        const template = await prepareCache({
          backend,
          data,
          main: mainJs,
          repo: REPO,
          root: join(params.dir, `${backend}-${data.count}`),
          tag: `scale_${backend.slice(0, 2)}_${data.count}`,
          env: ENV,
          blobs: false,
        });
        templates.push(template);
        const copy = await copyCache(template, ENV, params.keepTmp);
        subjects.push({
          paths: data.count,
          data,
          copy,
          loadSeconds: template.loadSeconds,
          startMs: [],
          rssAtStartMiB: 0,
          rounds: [],
          missingMs: [],
        });
      }
      for (const subject of subjects) {
        log(`${backend} ${subject.paths}: start-up`);
        await measureStarts(mainJs, subject);
        subject.server = await start(mainJs, subject);
        if (TWO_CPUS) await setAffinity(subject.server.pids(), '0');
        subject.pathsFile = writePaths(
          join(OUT, `scale-${backend}-${subject.paths}.txt`),
          sample(subject.paths, params.workingSet, params.seed).map(
            (i) => `/main/${subject.data.hashParts[i]}.narinfo`,
          ),
        );
        await hits(subject, 3, true);
      }
      for (let round = 0; round < params.rounds; round++) {
        const order = round % 2 === 0 ? subjects : [...subjects].reverse();
        for (const subject of order) {
          const rate = await hits(subject, params.seconds);
          subject.rounds.push(rate);
          log(
            `${backend} ${subject.paths}: round ${round + 1}: ${rate.requestsPerSecond.toFixed(0)}/s, ` +
              `p99 ${rate.p99Ms.toFixed(2)} ms (other processes ${rate.otherCores.toFixed(2)} cores)`,
          );
        }
      }
      for (const subject of subjects) {
        subject.c1 = await c1(subject);
        await measureMissing(subject);
        const server = subject.server as RunningServer;
        results.push({
          backend,
          paths: subject.paths,
          loadSeconds: subject.loadSeconds,
          startMs: subject.startMs,
          startMedianMs: median(subject.startMs),
          rssAtStartMiB: subject.rssAtStartMiB,
          rounds: subject.rounds,
          hitRate: median(subject.rounds.map((r) => r.requestsPerSecond)),
          c1: subject.c1,
          missingMs: subject.missingMs,
          missingMedianMs: median(subject.missingMs),
          peakRssMiB: memoryOf(server.pid).hwm / MiB,
        });
        const last = results[results.length - 1] as SizeResult;
        log(
          `${backend} ${subject.paths}: ${last.hitRate.toFixed(0)}/s, c=1 p99 ${last.c1.p99Ms.toFixed(2)} ms, ` +
            `start ${last.startMedianMs.toFixed(0)} ms, missing ${last.missingMedianMs.toFixed(1)} ms, ` +
            `peak RSS ${last.peakRssMiB.toFixed(0)} MiB`,
        );
      }
    } finally {
      for (const subject of subjects) {
        await subject.server?.stop();
        await subject.copy.drop();
      }
      if (!params.keepTmp) for (const template of templates) await dropCache(template);
    }
  }
  const markdown = table(results);
  writeFileSync(
    join(OUT, 'scale.json'),
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
        params,
        results,
      },
      null,
      2,
    ) + '\n',
  );
  writeFileSync(join(OUT, 'scale.md'), markdown);
  process.stdout.write(markdown);
  log(`done in ${elapsed(started)}; bench/out/scale.json, bench/out/scale.md`);
}

runBench(main);
