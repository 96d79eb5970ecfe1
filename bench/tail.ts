// `npm run bench:tail`: where the long tails of c=1 narinfo latency come from (issue 15, part 3).
// docs/benchmarks.md has niche's p99 at c=1 several times nginx's; this separates what Node.js costs by
// itself from what niche adds. One connection (wrk c=1; wrk and the server on CPU 0, as bench/run.ts does
// with BENCH_PIN_C1) against:
// - nginx serving a narinfo file (the baseline of docs/benchmarks.md);
// - a bare node:http server answering the same text from memory: the floor of any Node.js server;
// - niche answering a hit from its in-memory narinfo cache (the same text), and a miss (404 after a
//   database lookup), from a small synthetic cache (bench/synthetic-cache.ts).
// The targets alternate, TAIL_ROUNDS rounds of TAIL_SECONDS each; the table has the median of the rounds'
// p50, p99 and max, and p99 ÷ nginx's. The Node.js servers run with --trace-gc: the table also has how
// often V8 collected (per 1000 requests) and how long its pauses took, to set against the tails.
// Writes bench/out/tail.json and bench/out/tail.md (a table for docs/bench-tail.md).
//
// Parameters (environment variables): TAIL_ROUNDS=3, TAIL_SECONDS=10, TAIL_QUIET_WAIT_S=30.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { envNumber, median } from './env.js';
import { generate } from './gc-data.js';
import { waitForQuiet, withLoad } from './load.js';
import { elapsed, log, runBench, setAffinity, stopChild, track } from './proc.js';
import { buildNiche, freePort, startNginx, startNiche, type RunningServer } from './servers.js';
import { copyCache, dropCache, prepareCache } from './synthetic-cache.js';
import { runWrk, writePaths, type WrkResult } from './wrk.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');
const params = {
  rounds: envNumber('TAIL_ROUNDS', 3),
  seconds: envNumber('TAIL_SECONDS', 10),
  quietWaitS: envNumber('TAIL_QUIET_WAIT_S', 30),
};
const ENV = { ...process.env, NICHE_ACCESS_LOG: 'off', NICHE_GC_INTERVAL: 'off' };

interface GcPauses {
  readonly scavenges: number;
  readonly markCompacts: number;
  /** Pause durations, ms. */
  readonly pauses: number[];
}

interface Target {
  readonly name: string;
  readonly server: RunningServer;
  readonly pathsFile: string;
  readonly expect: 'ok' | 'error';
  /** The --trace-gc output so far (Node.js servers). */
  readonly gcLog?: () => string;
  readonly rounds: { wrk: WrkResult; otherCores: number; gc: GcPauses | undefined }[];
}

// `[pid:0x…]   123 ms: Scavenge 5.2 (6.0) -> 4.9 (7.0) MB, pooled: 0 MB, 0.61 / 0.00 ms (average mu = …`
const TRACE_LINE =
  /: (Scavenge|Mark-Compact|Mark-sweep|Minor Mark-Sweep)\b.*?MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/;

function gcPauses(trace: string): GcPauses {
  let scavenges = 0;
  let markCompacts = 0;
  const pauses: number[] = [];
  for (const line of trace.split('\n')) {
    const match = TRACE_LINE.exec(line);
    if (match === null) continue;
    if (match[1] === 'Scavenge' || match[1] === 'Minor Mark-Sweep') scavenges += 1;
    else markCompacts += 1;
    pauses.push(Number(match[2]));
  }
  return { scavenges, markCompacts, pauses };
}

/** A node:http server answering every request with `text`, with --trace-gc on its stdout. */
async function startBare(text: string): Promise<{ server: RunningServer; gcLog: () => string }> {
  const port = await freePort();
  const source = `
    const http = require('node:http');
    const text = ${JSON.stringify(text)};
    const length = String(Buffer.byteLength(text));
    http.createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'text/x-nix-narinfo', 'content-length': length });
      response.end(text);
    }).listen(${port}, '127.0.0.1', () => console.error('ready'));`;
  const child = spawn(process.execPath, ['--trace-gc', '-e', source], { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let trace = '';
  child.stdout.on('data', (chunk: Buffer) => (trace += chunk.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stderr.once('data', () => {
      resolve();
    });
    child.once('exit', (code) => {
      reject(new Error(`the bare server exited (${code})`));
    });
  });
  const origin = `http://127.0.0.1:${port}`;
  return {
    server: {
      name: 'niche',
      storeUrl: origin,
      origin,
      prefix: '',
      pid: child.pid ?? 0,
      spawnedAt: performance.now(),
      pids: () => [child.pid ?? 0],
      stop: () => stopChild(child, 'SIGTERM'),
    },
    gcLog: () => trace,
  };
}

async function round(target: Target): Promise<void> {
  await waitForQuiet({ maxOtherCores: 0.3, maxWaitS: params.quietWaitS });
  const before = target.gcLog?.().length ?? 0;
  const { value, otherCores } = await withLoad(() =>
    runWrk({
      origin: target.server.origin,
      pathsFile: target.pathsFile,
      connections: 1,
      threads: 1,
      seconds: params.seconds,
      expect: target.expect,
      cpu: 0,
    }),
  );
  const gc = target.gcLog === undefined ? undefined : gcPauses(target.gcLog().slice(before));
  target.rounds.push({ wrk: value, otherCores, gc });
  log(
    `  ${target.name}: ${value.requestsPerSecond.toFixed(0)}/s, p50 ${value.latencyMs.p50.toFixed(3)} ms, ` +
      `p99 ${value.latencyMs.p99.toFixed(3)} ms, max ${value.latencyMs.max.toFixed(2)} ms` +
      (gc === undefined ? '' : `, ${gc.scavenges} scavenges, ${gc.markCompacts} mark-compacts`) +
      ` (other processes ${otherCores.toFixed(2)} cores)`,
  );
}

interface Summary {
  readonly name: string;
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly p99Ratio: number;
  readonly gcPer1000: number | undefined;
  readonly gcPauseMedianMs: number | undefined;
  readonly gcPauseMaxMs: number | undefined;
  readonly otherCores: number;
}

function summarize(target: Target, nginxP99: number): Summary {
  const of = (pick: (r: WrkResult) => number): number => median(target.rounds.map((r) => pick(r.wrk)));
  const gcRounds = target.rounds.flatMap((r) => (r.gc === undefined ? [] : [{ gc: r.gc, wrk: r.wrk }]));
  const pauses = gcRounds.flatMap((r) => r.gc.pauses);
  const requests = gcRounds.reduce((sum, r) => sum + r.wrk.requests, 0);
  const collections = gcRounds.reduce((sum, r) => sum + r.gc.scavenges + r.gc.markCompacts, 0);
  const p99 = of((r) => r.latencyMs.p99);
  return {
    name: target.name,
    requestsPerSecond: of((r) => r.requestsPerSecond),
    p50Ms: of((r) => r.latencyMs.p50),
    p99Ms: p99,
    maxMs: of((r) => r.latencyMs.max),
    p99Ratio: p99 / nginxP99,
    gcPer1000: gcRounds.length === 0 ? undefined : (1000 * collections) / requests,
    gcPauseMedianMs: pauses.length === 0 ? undefined : median(pauses),
    gcPauseMaxMs: pauses.length === 0 ? undefined : Math.max(...pauses),
    otherCores: median(target.rounds.map((r) => r.otherCores)),
  };
}

function table(summaries: readonly Summary[]): string {
  const ms = (value: number | undefined): string => (value === undefined ? '' : `${value.toFixed(3)} ms`);
  const lines = [
    '| c=1, one connection | req/s | p50 | p99 | p99 ÷ nginx | max (median of rounds) | V8 collections per 1000 requests | V8 pause, median / max | other CPU |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const s of summaries) {
    lines.push(
      `| ${s.name} | ${s.requestsPerSecond.toFixed(0)}/s | ${ms(s.p50Ms)} | ${ms(s.p99Ms)} | ${s.p99Ratio.toFixed(2)}× | ` +
        `${ms(s.maxMs)} | ${s.gcPer1000 === undefined ? '' : s.gcPer1000.toFixed(2)} | ` +
        `${s.gcPauseMedianMs === undefined ? '' : `${ms(s.gcPauseMedianMs)} / ${ms(s.gcPauseMaxMs)}`} | ${s.otherCores.toFixed(2)} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(OUT, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'niche-bench-tail-'));
  const stops: (() => Promise<void>)[] = [];
  try {
    log('building niche (tsc)');
    const mainJs = await buildNiche(REPO, join(OUT, 'build-tail'));
    const data = generate(1000, 1);
    const template = await prepareCache({
      backend: 'sqlite',
      data,
      main: mainJs,
      repo: REPO,
      root: join(dir, 'cache'),
      tag: 'tail',
      env: ENV,
      blobs: false,
    });
    stops.push(() => dropCache(template));
    const copy = await copyCache(template, ENV, false);
    const traceFile = join(dir, 'niche-trace-gc.log');
    const niche = await startNiche({
      repo: REPO,
      dataDir: copy.dataDir,
      logFile: traceFile,
      compiledMain: mainJs,
      env: copy.env,
      nodeArgs: ['--trace-gc'],
    });
    stops.push(() => niche.stop());
    const hash = data.hashParts[0] as string;
    const hitPath = `/main/${hash}.narinfo`;
    const text = await (await fetch(`${niche.origin}${hitPath}`)).text();
    const missHashes = Array.from(
      { length: 1000 },
      (_, i) => `${String(i).padStart(4, '0')}${'0'.repeat(28)}`,
    );

    const root = join(dir, 'tree');
    mkdirSync(root, { recursive: true });
    writeFileSync(join(root, `${hash}.narinfo`), text);
    writeFileSync(join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    const nginx = await startNginx({ root, dir: join(dir, 'nginx') });
    stops.push(() => nginx.stop());
    const bare = await startBare(text);
    stops.push(() => bare.server.stop());
    for (const server of [niche, nginx, bare.server]) await setAffinity(server.pids(), '0');

    const file = (name: string, paths: readonly string[]): string =>
      writePaths(join(OUT, `tail-${name}.txt`), paths);
    const nicheTrace = (): string => readFileSync(traceFile, 'utf8');
    const targets: Target[] = [
      {
        name: 'nginx, narinfo file',
        server: nginx,
        pathsFile: file('nginx', [`/${hash}.narinfo`]),
        expect: 'ok',
        rounds: [],
      },
      {
        name: 'bare node:http, text from memory',
        server: bare.server,
        pathsFile: file('bare', ['/x.narinfo']),
        expect: 'ok',
        gcLog: bare.gcLog,
        rounds: [],
      },
      {
        name: 'niche, hit (in-memory narinfo)',
        server: niche,
        pathsFile: file('hit', [hitPath]),
        expect: 'ok',
        gcLog: nicheTrace,
        rounds: [],
      },
      {
        name: 'niche, miss (404, SQLite lookup)',
        server: niche,
        pathsFile: file(
          'miss',
          missHashes.map((h) => `/main/${h}.narinfo`),
        ),
        expect: 'error',
        gcLog: nicheTrace,
        rounds: [],
      },
    ];
    for (const target of targets) {
      await runWrk({
        origin: target.server.origin,
        pathsFile: target.pathsFile,
        connections: 1,
        threads: 1,
        seconds: 2,
        expect: target.expect,
        cpu: 0,
        warmup: true,
      });
    }
    for (let r = 0; r < params.rounds; r++) {
      log(`round ${r + 1} [${elapsed(started)}]`);
      for (const target of r % 2 === 0 ? targets : [...targets].reverse()) await round(target);
    }
    const nginxP99 = summarize(targets[0] as Target, 1).p99Ms;
    const summaries = targets.map((target) => summarize(target, nginxP99));
    const markdown = table(summaries);
    writeFileSync(
      join(OUT, 'tail.json'),
      JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
          params,
          summaries,
        },
        null,
        2,
      ),
    );
    writeFileSync(join(OUT, 'tail.md'), `${markdown}\n`);
    console.log(markdown);
    log(`done in ${elapsed(started)}; bench/out/tail.json, bench/out/tail.md`);
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

runBench(main);
