// `npm run bench:gc`: garbage collection of a large cache (issue 13). A cache of GC_PATHS paths (default a
// million; bench/gc-data.ts says how it is shaped) is written straight into the metadata store, SQLite and
// PostgreSQL in turn, with an empty blob file per NAR file; a retention of 30 days makes GC remove about
// 37% of the paths (the exact number is predicted with GC's own planner and checked). Then, on copies of
// that cache (the database copied, the blob directory hard-linked, so every run starts from the same
// state):
// - `cli`: `niche gc --grace 0` as its own process beside a `niche serve` that wrk keeps busy with
//   narinfo hits: GC wall time, the GC process's peak RSS (/usr/bin/time), wrk's p99 during GC against
//   the p99 of idle runs on the same server just before;
// - `serve`: the GC `niche serve` runs on its schedule (NICHE_GC_INTERVAL), in the process that answers
//   wrk, which runs it in a child process: GC wall time (from its lease appearing to its disappearing),
//   the child's peak RSS (it logs it), the server's before and after, wrk's p99 during GC against idle
//   runs before it;
// - `tracking` (SQLite only): narinfo hit throughput with access tracking as implemented against the same
//   server with tracking switched off (its touchPath/touchFile replaced by no-ops on that instance), two
//   servers in one process (see bench/metrics-overhead.ts for why), pinned to CPU 0 with wrk on CPU 1,
//   alternating runs, the median of the pairs' ratios. Two working sets: 1000 paths (narinfos answered
//   from memory, the fast path) and 100k paths (mostly answered from the database, and enough distinct
//   paths to fill the tracker's map, so flushes run during the runs).
// wrk asks, with GC_CONNECTIONS connections, for narinfos of paths GC keeps (their own last access is
// within retention), a random 100k of them, so most answers come from the database, not from memory.
// Writes bench/out/gc.json and prints a summary; docs/bench-gc.md holds the figures of a run.
//
// Needs wrk, /usr/bin/time, and for PostgreSQL a server where test/helpers/postgres.ts finds one (the
// bench creates and drops its own databases; loading needs a superuser, for session_replication_role).
//
// Parameters (environment variables):
//   GC_PATHS=1000000        paths in the cache (100000 runs in a few minutes)
//   GC_BACKENDS=sqlite,postgres
//   GC_MODES=cli,serve,tracking
//   GC_REPEATS=1            GC runs per backend and mode (each on a fresh copy)
//   GC_CONNECTIONS=8        wrk connections
//   GC_IDLE_RUNS=3          idle wrk runs before each GC (the baseline: the median of their p99s)
//   GC_IDLE_S=5             seconds per idle run
//   GC_TRACKING_PAIRS=6     pairs of runs per working set for `tracking`
//   GC_TRACKING_S=10        seconds per tracking run
//   GC_SEED=1
//   GC_MAX_OTHER_CORES=0.3  before idle runs and before a `cli` GC, wait for other processes to use less
//   GC_QUIET_WAIT_S=60      … for at most this long
//   GC_DIR=$TMPDIR/niche-bench-gc   where the data directories go (GC_PATHS=1e6: about 2 GB)
//   GC_KEEP_TMP=0           1: keep the data directories

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { expectedPlan, generate, keptPaths, type GcData } from './gc-data.js';
import { waitForQuiet, withLoad } from './load.js';
import {
  copyCache,
  dropCache,
  prepareCache,
  type Backend,
  type CacheCopy,
  type SyntheticCache,
} from './synthetic-cache.js';
import { elapsed, killAll, log, memoryOf, run, stopChild, track } from './proc.js';
import { buildNiche, startNiche, type RunningServer } from './servers.js';
import { runWrk, startWrk, writePaths, type WrkResult } from './wrk.js';
import { envList, envNumber, median } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');

const params = {
  paths: envNumber('GC_PATHS', 1_000_000),
  backends: envList('GC_BACKENDS', 'sqlite,postgres') as Backend[],
  modes: envList('GC_MODES', 'cli,serve,tracking'),
  repeats: envNumber('GC_REPEATS', 1),
  connections: envNumber('GC_CONNECTIONS', 8),
  idleRuns: envNumber('GC_IDLE_RUNS', 3),
  idleSeconds: envNumber('GC_IDLE_S', 5),
  trackingPairs: envNumber('GC_TRACKING_PAIRS', 6),
  trackingSeconds: envNumber('GC_TRACKING_S', 10),
  seed: envNumber('GC_SEED', 1),
  maxOtherCores: envNumber('GC_MAX_OTHER_CORES', 0.3),
  quietWaitS: envNumber('GC_QUIET_WAIT_S', 60),
  dir: process.env.GC_DIR ?? join(tmpdir(), 'niche-bench-gc'),
  keepTmp: process.env.GC_KEEP_TMP === '1',
};

/** Environment of every niche process: no access log (the bench measures GC, not logging). */
const BASE_ENV = { ...process.env, NICHE_ACCESS_LOG: 'off', NICHE_GC_GRACE: '1ms' };

interface WrkSummary {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly seconds: number;
  /** Requests that took longer than wrk's timeout (10 s). */
  readonly timeouts: number;
  readonly otherCores: number;
}

interface GcRun {
  readonly backend: Backend;
  readonly mode: 'cli' | 'serve';
  readonly gcSeconds: number;
  /** Peak RSS of the collecting process (cli: the gc process; serve: the server's GC child, from its log). */
  readonly gcPeakRssMiB: number;
  /** serve: the server's peak RSS just before GC started. */
  readonly serverPeakBeforeMiB: number | undefined;
  /** serve: the server's peak RSS after GC (the collection ran in its child). */
  readonly serverPeakAfterMiB: number | undefined;
  readonly pathsDeleted: number;
  readonly report: string;
  readonly idle: WrkSummary[];
  readonly during: WrkSummary;
  readonly idleP99Ms: number;
  readonly p99Ratio: number;
  readonly throughputRatio: number;
}

function summarize(result: WrkResult, otherCores: number): WrkSummary {
  return {
    requestsPerSecond: result.requestsPerSecond,
    p50Ms: result.latencyMs.p50,
    p99Ms: result.latencyMs.p99,
    maxMs: result.latencyMs.max,
    seconds: result.seconds,
    timeouts: result.errors.timeout,
    otherCores,
  };
}

const MiB = 2 ** 20;

function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  let state = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const j = state % (i + 1);
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

function prepare(backend: Backend, data: GcData, main: string): Promise<SyntheticCache> {
  return prepareCache({
    backend,
    data,
    main,
    repo: REPO,
    root: join(params.dir, backend),
    tag: `gc_${backend}`,
    env: BASE_ENV,
    blobs: true,
  });
}

function copyOf(prepared: SyntheticCache, extraEnv: NodeJS.ProcessEnv): Promise<CacheCopy> {
  return copyCache(prepared, { ...BASE_ENV, ...extraEnv }, params.keepTmp);
}

/** Polls whether the GC lease is held (GC is running). */
async function leaseProbe(
  backend: Backend,
  copy: CacheCopy,
): Promise<{ held(): Promise<boolean>; close(): Promise<void> }> {
  if (backend === 'sqlite') {
    const db = new Database(join(copy.dataDir, 'niche.sqlite'), { readonly: true, fileMustExist: true });
    const statement = db.prepare("SELECT count(*) AS n FROM leases WHERE name = 'gc'");
    return {
      held: () => Promise.resolve((statement.get() as { n: number }).n > 0),
      close: () => {
        db.close();
        return Promise.resolve();
      },
    };
  }
  const client = new pg.Client({ connectionString: copy.env.NICHE_DATABASE_URL });
  await client.connect();
  return {
    held: async () => (await client.query("SELECT 1 FROM leases WHERE name = 'gc'")).rowCount !== 0,
    close: () => client.end(),
  };
}

async function idleRuns(server: RunningServer, pathsFile: string): Promise<WrkSummary[]> {
  await waitForQuiet({ maxOtherCores: params.maxOtherCores, maxWaitS: params.quietWaitS });
  await runWrk({
    origin: server.origin,
    pathsFile,
    connections: params.connections,
    threads: 1,
    seconds: 3,
    expect: 'ok',
    warmup: true,
  });
  const idle: WrkSummary[] = [];
  for (let i = 0; i < params.idleRuns; i++) {
    const { value, otherCores } = await withLoad(() =>
      runWrk({
        origin: server.origin,
        pathsFile,
        connections: params.connections,
        threads: 1,
        seconds: params.idleSeconds,
        expect: 'ok',
      }),
    );
    idle.push(summarize(value, otherCores));
  }
  return idle;
}

function longWrk(server: RunningServer, pathsFile: string) {
  return startWrk({
    origin: server.origin,
    pathsFile,
    connections: params.connections,
    threads: 1,
    seconds: 3600,
    tolerateTimeouts: true,
    expect: 'ok',
  });
}

function finish(
  base: Pick<
    GcRun,
    | 'backend'
    | 'mode'
    | 'gcSeconds'
    | 'gcPeakRssMiB'
    | 'serverPeakBeforeMiB'
    | 'serverPeakAfterMiB'
    | 'pathsDeleted'
    | 'report'
  >,
  idle: WrkSummary[],
  during: WrkSummary,
): GcRun {
  const idleP99Ms = median(idle.map((run) => run.p99Ms));
  const idleRate = median(idle.map((run) => run.requestsPerSecond));
  return {
    ...base,
    idle,
    during,
    idleP99Ms,
    p99Ratio: during.p99Ms / idleP99Ms,
    throughputRatio: during.requestsPerSecond / idleRate,
  };
}

/** `niche gc --grace 0` beside a busy `niche serve`. */
async function gcByCli(prepared: SyntheticCache, main: string, pathsFile: string): Promise<GcRun> {
  const copy = await copyOf(prepared, { NICHE_GC_INTERVAL: 'off' });
  const server = await startNiche({
    repo: REPO,
    dataDir: copy.dataDir,
    logFile: join(copy.dataDir, 'serve.log'),
    compiledMain: main,
    env: copy.env,
  });
  try {
    const idle = await idleRuns(server, pathsFile);
    await waitForQuiet({ maxOtherCores: params.maxOtherCores, maxWaitS: params.quietWaitS });
    const wrk = longWrk(server, pathsFile);
    const started = performance.now();
    const measured = await withLoad(() =>
      run(
        '/usr/bin/time',
        ['-f', 'MAXRSS_KB %M', process.execPath, main, 'gc', '--grace', '0', '--data', copy.dataDir],
        {
          env: copy.env,
          cwd: REPO,
        },
      ),
    ).catch(async (error: unknown) => {
      await wrk.stop().catch(() => undefined);
      throw error;
    });
    const gcSeconds = (performance.now() - started) / 1000;
    const during = await wrk.stop();
    const { value: gc, otherCores } = measured;
    const rss = /MAXRSS_KB (\d+)/.exec(gc.stderr);
    const deleted = /deleted (\d+) paths/.exec(gc.stdout);
    return finish(
      {
        backend: prepared.backend,
        mode: 'cli',
        gcSeconds,
        gcPeakRssMiB: (Number(rss?.[1] ?? 0) * 1024) / MiB,
        serverPeakBeforeMiB: undefined,
        serverPeakAfterMiB: undefined,
        pathsDeleted: Number(deleted?.[1] ?? -1),
        report: gc.stdout.trim(),
      },
      idle,
      summarize(during, otherCores),
    );
  } finally {
    await server.stop();
    await copy.drop();
  }
}

/** The scheduled GC of `niche serve`, in the process wrk keeps busy. */
async function gcInServer(prepared: SyntheticCache, main: string, pathsFile: string): Promise<GcRun> {
  // The first run comes one interval after the start: after the warm-up and the idle runs.
  const intervalS = 3 + params.idleRuns * (params.idleSeconds + 1) + 15;
  const copy = await copyOf(prepared, { NICHE_GC_INTERVAL: `${intervalS}s` });
  const logFile = join(copy.dataDir, 'serve.log');
  const server = await startNiche({
    repo: REPO,
    dataDir: copy.dataDir,
    logFile,
    compiledMain: main,
    env: copy.env,
    args: ['--log-level', 'info'],
  });
  const lease = await leaseProbe(prepared.backend, copy);
  try {
    const idle = await idleRuns(server, pathsFile);
    if (await lease.held())
      throw new Error(`GC started before the idle runs ended; raise the interval (${intervalS} s)`);
    const serverPeakBeforeMiB = memoryOf(server.pid).hwm / MiB;
    while (!(await lease.held())) await new Promise((resolve) => setTimeout(resolve, 10));
    const started = performance.now();
    const wrk = longWrk(server, pathsFile);
    const { otherCores } = await withLoad(async () => {
      while (await lease.held()) await new Promise((resolve) => setTimeout(resolve, 10));
    });
    const gcSeconds = (performance.now() - started) / 1000;
    const during = await wrk.stop();
    const serverPeakAfterMiB = memoryOf(server.pid).hwm / MiB;
    const lines = readFileSync(logFile, 'utf8').split('\n');
    const line = lines.find((l) => l.includes('"garbage collection done"'));
    const report =
      line === undefined ? undefined : (JSON.parse(line) as { gc: { caches: { paths: number }[] } }).gc;
    // The child that collected logs its own peak as it ends.
    const ended = lines.find((l) => l.includes('"garbage collection process ended"'));
    const gcPeakRssMiB = ended === undefined ? NaN : (JSON.parse(ended) as { peakRssMiB: number }).peakRssMiB;
    return finish(
      {
        backend: prepared.backend,
        mode: 'serve',
        gcSeconds,
        gcPeakRssMiB,
        serverPeakBeforeMiB,
        serverPeakAfterMiB,
        pathsDeleted: report?.caches[0]?.paths ?? -1,
        report: JSON.stringify(report),
      },
      idle,
      summarize(during, otherCores),
    );
  } finally {
    await lease.close();
    await server.stop();
    await copy.drop();
  }
}

// ---- access tracking overhead ----

interface TrackingResult {
  readonly workingSet: number;
  /** Median over the pairs of (rate with tracking) / (rate without). */
  readonly ratio: number;
  readonly ratios: number[];
  readonly onRate: number;
  readonly offRate: number;
}

function pairServerScript(build: string): string {
  const server = pathToFileURL(join(build, 'app', 'server.js')).href;
  const config = pathToFileURL(join(build, 'config.js')).href;
  return `
import { startServer } from ${JSON.stringify(server)};
import { loadServeConfig } from ${JSON.stringify(config)};
const [offData, onData] = process.argv.slice(2);
const env = { NICHE_GC_INTERVAL: 'off', NICHE_ACCESS_LOG: 'off' };
const servers = {};
for (const [setting, data] of [['off', offData], ['on', onData]]) {
  const config = loadServeConfig({ data, listen: '127.0.0.1:0', logLevel: 'warn' }, env);
  servers[setting] = await startServer(config);
}
// Tracking off: this server's tracker records nothing (the calls remain, and cost a no-op call).
servers.off.service.access.touchPath = () => {};
servers.off.service.access.touchFile = () => {};
process.stdout.write('PAIR_URLS ' + JSON.stringify({ off: servers.off.url, on: servers.on.url }) + '\\n');
process.once('SIGINT', () => {
  Promise.all(Object.values(servers).map((server) => server.close())).then(() => process.exit(0));
});
`;
}

async function startPair(
  script: string,
  off: string,
  on: string,
  logFile: string,
): Promise<{ child: ChildProcess; origins: { off: string; on: string } }> {
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  const pin = availableParallelism() >= 2 ? ['taskset', '-c', '0'] : [];
  try {
    const [cmd, ...args] = [...pin, process.execPath, script, off, on];
    child = spawn(cmd, args, { stdio: ['ignore', 'pipe', fd], env: BASE_ENV });
  } finally {
    closeSync(fd);
  }
  track(child);
  const stdout = child.stdout;
  if (stdout === null) throw new Error('no stdout');
  const origins = await new Promise<{ off: string; on: string }>((resolve, reject) => {
    let text = '';
    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => {
      text += chunk;
      const line = text.split('\n').find((l) => l.startsWith('PAIR_URLS '));
      if (line !== undefined)
        resolve(JSON.parse(line.slice('PAIR_URLS '.length)) as { off: string; on: string });
    });
    child.once('exit', () => {
      reject(new Error(`the pair server exited before listening; see ${logFile}`));
    });
  });
  stdout.resume();
  return { child, origins };
}

async function trackingOverhead(
  prepared: SyntheticCache,
  main: string,
  data: GcData,
  kept: readonly number[],
): Promise<TrackingResult[]> {
  const build = join(main, '..', '..');
  const script = join(OUT, 'gc-pair-server.mjs');
  writeFileSync(script, pairServerScript(build));
  const off = await copyOf(prepared, {});
  const on = await copyOf(prepared, {});
  const pair = await startPair(script, off.dataDir, on.dataDir, join(params.dir, 'pair.log'));
  const wrkCpu = availableParallelism() >= 2 ? 1 : undefined;
  const results: TrackingResult[] = [];
  try {
    for (const workingSet of [1000, 100_000]) {
      const file = writePaths(
        join(OUT, `gc-tracking-${workingSet}.txt`),
        shuffled(kept, params.seed + workingSet)
          .slice(0, workingSet)
          .map((i) => `/main/${data.hashParts[i]}.narinfo`),
      );
      const measure = async (origin: string, seconds: number, warmup = false): Promise<WrkResult> =>
        runWrk({
          origin,
          pathsFile: file,
          connections: 64,
          threads: 1,
          seconds,
          expect: 'ok',
          warmup,
          ...(wrkCpu === undefined ? {} : { cpu: wrkCpu }),
        });
      await measure(pair.origins.off, 5, true);
      await measure(pair.origins.on, 5, true);
      const ratios: number[] = [];
      const onRates: number[] = [];
      const offRates: number[] = [];
      for (let i = 0; i < params.trackingPairs; i++) {
        const order: ('on' | 'off')[] = i % 2 === 0 ? ['on', 'off'] : ['off', 'on'];
        const rate: Record<string, number> = {};
        for (const setting of order)
          rate[setting] = (await measure(pair.origins[setting], params.trackingSeconds)).requestsPerSecond;
        ratios.push((rate.on as number) / (rate.off as number));
        onRates.push(rate.on as number);
        offRates.push(rate.off as number);
        log(
          `    tracking ${workingSet}: pair ${i + 1}: on ${(rate.on as number).toFixed(0)}/s off ${(rate.off as number).toFixed(0)}/s`,
        );
      }
      results.push({
        workingSet,
        ratio: median(ratios),
        ratios,
        onRate: median(onRates),
        offRate: median(offRates),
      });
    }
  } finally {
    await stopChild(pair.child, 'SIGINT', 30_000);
    await off.drop();
    await on.drop();
  }
  return results;
}

function describeRun(run: GcRun): string {
  const idle = run.idle.map((r) => r.p99Ms.toFixed(2)).join('/');
  return (
    `${run.backend} ${run.mode}: GC ${run.gcSeconds.toFixed(1)} s, ${run.pathsDeleted} paths deleted, peak RSS ` +
    `${run.gcPeakRssMiB.toFixed(0)} MiB${run.serverPeakBeforeMiB === undefined ? '' : ` (server before GC: ${run.serverPeakBeforeMiB.toFixed(0)} MiB, after: ${(run.serverPeakAfterMiB ?? NaN).toFixed(0)} MiB)`}; ` +
    `narinfo p99 idle ${run.idleP99Ms.toFixed(2)} ms (${idle}), during GC ${run.during.p99Ms.toFixed(2)} ms ` +
    `(x${run.p99Ratio.toFixed(2)}, max ${run.during.maxMs.toFixed(0)} ms), throughput x${run.throughputRatio.toFixed(2)}, ` +
    `${run.during.timeouts} requests over 10 s, other processes ${run.during.otherCores.toFixed(2)} cores`
  );
}

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(OUT, { recursive: true });
  mkdirSync(params.dir, { recursive: true });
  log(`building niche (tsc)`);
  const mainJs = await buildNiche(REPO, join(OUT, 'build-gc'));
  log(`generating ${params.paths} paths (seed ${params.seed})`);
  const data = generate(params.paths, params.seed);
  const expected = expectedPlan(data);
  const kept = keptPaths(data);
  log(
    `  ${data.files.hash.length} NAR files, ${data.refs.length} references; GC should delete ${expected.victims} paths ` +
      `(${((100 * expected.victims) / data.count).toFixed(1)}%) [${elapsed(started)}]`,
  );
  const pathsFile = writePaths(
    join(OUT, 'gc-narinfos.txt'),
    shuffled(kept, params.seed)
      .slice(0, 100_000)
      .map((i) => `/main/${data.hashParts[i]}.narinfo`),
  );
  const runs: GcRun[] = [];
  const prepared: SyntheticCache[] = [];
  let tracking: TrackingResult[] | undefined;
  for (const backend of params.backends) {
    log(`${backend}: preparing`);
    const template = await prepare(backend, data, mainJs);
    prepared.push(template);
    for (const mode of params.modes) {
      for (let repeat = 0; repeat < params.repeats && mode !== 'tracking'; repeat++) {
        log(`${backend}: GC (${mode}), run ${repeat + 1}`);
        const result =
          mode === 'cli'
            ? await gcByCli(template, mainJs, pathsFile)
            : await gcInServer(template, mainJs, pathsFile);
        log(`  ${describeRun(result)}`);
        if (result.pathsDeleted !== expected.victims)
          log(`  NOTE: expected ${expected.victims} paths deleted`);
        runs.push(result);
      }
      if (mode === 'tracking' && backend === 'sqlite') {
        log(`${backend}: access tracking overhead`);
        tracking = await trackingOverhead(template, mainJs, data, kept);
        for (const t of tracking)
          log(`  working set ${t.workingSet}: ${t.ratio.toFixed(3)} of the rate without tracking`);
      }
    }
    if (!params.keepTmp) await dropCache(template);
  }
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    params,
    data: {
      paths: data.count,
      files: data.files.hash.length,
      references: data.refs.length,
      orphans: data.orphans.length,
      expected,
    },
    prepared: prepared.map((p) => ({
      backend: p.backend,
      loadSeconds: p.loadSeconds,
      blobSeconds: p.blobSeconds,
    })),
    runs,
    tracking,
  };
  writeFileSync(join(OUT, 'gc.json'), JSON.stringify(result, null, 2) + '\n');
  log(`done in ${elapsed(started)}; bench/out/gc.json`);
  for (const r of runs) process.stdout.write(`${describeRun(r)}\n`);
  for (const t of tracking ?? []) {
    process.stdout.write(
      `tracking, working set ${t.workingSet}: x${t.ratio.toFixed(3)} (on ${t.onRate.toFixed(0)}/s, off ${t.offRate.toFixed(0)}/s; pairs ${t.ratios.map((r) => r.toFixed(3)).join(' ')})\n`,
    );
  }
}

process.once('SIGINT', () => {
  killAll();
  process.exit(130);
});
try {
  await main();
} finally {
  killAll();
}
