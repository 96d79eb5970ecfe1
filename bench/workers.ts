// `npm run bench:workers`: what `niche serve --workers N` (issue 15, part 4) buys on the request a binary
// cache answers most, a narinfo hit: wrk with 64 keep-alive connections against `--workers 1` and
// `--workers 2` on the same data directory (a public cache of OPS-sized small paths), from a tsc build,
// access logs on (the default) to a file. For each: requests per second and the server's CPU per request,
// user + system time of its whole process tree (the primary and its workers) over the requests answered.
// The two servers run side by side and are measured in pairs of short runs, the order alternating; the
// figures are the medians over the pairs. Nothing is pinned: the point is to let the workers use every
// core, so wrk shares them (one wrk thread). Each pair records how much CPU other processes used meanwhile
// (bench/load.ts); the report says whether the machine was quiet. Writes bench/out/workers.json and
// docs/bench-workers.md.
//
// Needs wrk (apt-get install -y wrk).
//
// Parameters (environment variables):
//   WORKERS_PATHS=1000          small paths (the narinfos wrk cycles through)
//   WORKERS_PAIRS=6             pairs of runs
//   WORKERS_DURATION_S=5        seconds per run
//   WORKERS_CONNECTIONS=64      wrk connections
//   WORKERS_COUNTS=1,2          the --workers values compared (the first is the baseline)
//   WORKERS_QUIET_WAIT_S=20     wait up to this long before each pair for other processes to calm down
//   WORKERS_MAX_OTHER_CORES=0.3 a pair during which other processes used more is marked busy
//   WORKERS_KEEP_TMP=0          1: keep the temporary directory (logs, build)
//   WORKERS_RENDER_ONLY=0       1: write docs/bench-workers.md again from bench/out/workers.json, measuring
//                               nothing (after a change of the report's text)

import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { cpuSecondsOf, waitForQuiet, withLoad } from './load.js';
import { killAll, log, memoryOf } from './proc.js';
import { buildNiche, createPushToken, pushSmallPaths, startNiche, type RunningServer } from './servers.js';
import { runWrk, writePaths } from './wrk.js';
import { envNumber, median } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');

const params = {
  paths: envNumber('WORKERS_PATHS', 1000),
  pairs: envNumber('WORKERS_PAIRS', 6),
  durationS: envNumber('WORKERS_DURATION_S', 5),
  connections: envNumber('WORKERS_CONNECTIONS', 64),
  counts: (process.env.WORKERS_COUNTS ?? '1,2').split(',').map((text) => Number(text.trim())),
  quietWaitS: envNumber('WORKERS_QUIET_WAIT_S', 20),
  maxOtherCores: envNumber('WORKERS_MAX_OTHER_CORES', 0.3),
  keepTmp: process.env.WORKERS_KEEP_TMP === '1',
  renderOnly: process.env.WORKERS_RENDER_ONLY === '1',
};

interface Load {
  readonly before: string;
  readonly after: string;
  readonly busyPairs: number;
  readonly pairs: number;
}

interface Round {
  readonly requestsPerSecond: number;
  readonly cpuUsPerRequest: number;
  /** Cores the server's process tree used on average. */
  readonly serverCores: number;
  readonly p99Ms: number;
  readonly otherCores: number;
}

async function measure(server: RunningServer, pathsFile: string, warmup = false): Promise<Round> {
  const pids = server.pids();
  const before = cpuSecondsOf(pids);
  const { value: result, otherCores } = await withLoad(() =>
    runWrk({
      origin: server.origin,
      pathsFile,
      connections: params.connections,
      threads: 1,
      seconds: warmup ? 2 : params.durationS,
      expect: 'ok',
      warmup,
    }),
  );
  const cpu = cpuSecondsOf(pids) - before;
  return {
    requestsPerSecond: result.requestsPerSecond,
    cpuUsPerRequest: (cpu * 1e6) / Math.max(1, result.requests),
    serverCores: cpu / result.seconds,
    p99Ms: result.latencyMs.p99,
    otherCores,
  };
}

interface Result {
  readonly workers: number;
  readonly requestsPerSecond: number;
  readonly cpuUsPerRequest: number;
  readonly serverCores: number;
  readonly p99Ms: number;
  /** Resident memory of the whole process tree after the runs, MiB. */
  readonly rssMiB: number;
  readonly rounds: readonly Round[];
}

const fmt = (value: number, digits = 0): string =>
  value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function markdown(
  date: string,
  run: {
    readonly pairs: number;
    readonly durationS: number;
    readonly paths: number;
    readonly connections: number;
  },
  results: readonly Result[],
  load: Load,
): string {
  const base = results[0];
  const most = results.at(-1);
  const measured =
    base === undefined || most === undefined || most === base
      ? ''
      : `Here ${most.workers} workers answered ${(most.requestsPerSecond / base.requestsPerSecond).toFixed(2)} × the ` +
        `rate of one, at ${(most.cpuUsPerRequest / base.cpuUsPerRequest).toFixed(2)} × its CPU per request, using ` +
        `${fmt(most.serverCores, 2)} cores instead of ${fmt(base.serverCores, 2)}: one worker is bound by its one ` +
        'core, and the second core is shared with wrk (and with whatever else ran). This run does not separate ' +
        'why the CPU per request differs; the likely cause is two workers and wrk taking turns on two cores (more ' +
        'context switches, colder caches). Rendering narinfos once per worker costs little: one render per ' +
        `narinfo and worker every 10 s, ${((100 * (run.paths * most.workers)) / 10 / most.requestsPerSecond).toFixed(1)}% ` +
        `of the requests here; the primary accepted only the ${run.connections} connections.`;
  const rows = results.map(
    (r) =>
      `| ${r.workers} | ${fmt(r.requestsPerSecond)} | ${base === undefined ? '' : (r.requestsPerSecond / base.requestsPerSecond).toFixed(2)} | ` +
      `${fmt(r.cpuUsPerRequest, 1)} | ${fmt(r.serverCores, 2)} | ${fmt(r.p99Ms, 1)} | ${fmt(r.rssMiB)} |`,
  );
  const quiet =
    load.busyPairs === 0
      ? 'No pair saw other processes use more than ' +
        `${params.maxOtherCores} cores, but the machine is shared with another engineer's work, so treat the figures as indicative.`
      : `${load.busyPairs} of ${load.pairs} pairs ran while other processes used more than ${params.maxOtherCores} cores ` +
        "(another engineer's tests and benchmarks share this machine): the figures were taken on a busy machine.";
  return [
    '# Benchmark: `niche serve --workers N`',
    '',
    '<!-- Generated by `npm run bench:workers` (bench/workers.ts, which says how it measures); edits are overwritten. -->',
    '',
    `Run ${date} on ${availableParallelism()} × ${cpus()[0]?.model ?? 'unknown'}; /proc/loadavg before: ` +
      `\`${load.before}\`, after: \`${load.after}\`. Narinfo hits from a public cache (${run.paths} different ` +
      `narinfos cycled, wrk with one thread and ${run.connections} keep-alive connections over HTTP/1.1), ` +
      `${run.pairs} pairs of ${run.durationS} s runs, the order alternating, medians shown. Both servers run ` +
      'from a tsc build on the same data directory (SQLite, access logs on, to a file); server CPU is user + system ' +
      'time of the whole process tree (the primary and its workers) over the requests answered. Nothing is ' +
      'pinned: wrk shares the cores with the workers.',
    '',
    quiet,
    '',
    '| workers | requests/s | vs 1 worker | server CPU µs per request | server cores used | p99 ms | RSS of the process tree, MiB |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    measured,
    '',
    '## What to expect on 8 to 64 cores',
    '',
    'On this machine the load generator needs a core of its own, so two workers cannot show more than what ' +
      'the second core leaves after wrk; the CPU per request is the figure that carries over. A narinfo hit ' +
      'is answered entirely inside one worker (its read path, its in-memory narinfos, its SQLite connection, ' +
      'its access log batching), so workers share nothing per request and the rate should grow close to ' +
      'linearly with workers up to the number of cores, less what the client side and the kernel take. What ' +
      'they do share, and where the scaling bends:',
    '',
    '- **Accepting connections.** Under SCHED_RR the primary accepts every connection and passes it to a ' +
      'worker over IPC: a cost per connection, on one core, not per request (not measured here: wrk opens ' +
      'its 64 connections once). Nix keeps its connections open for many requests, so this should be noise ' +
      'for it; a workload of short connections (clients without keep-alive, many TLS clients reconnecting) ' +
      "would be bounded by the primary's one core before the workers'. TLS handshakes happen in the workers.",
    '',
    '- **SQLite.** Reads do not contend: WAL gives every worker its own snapshot and narinfo misses are ' +
      'one indexed lookup each. Writes (uploads, deletions, access-tracking flushes, GC batches) take the ' +
      "database's one write lock in turn, each commit an fsync (synchronous = FULL): the verification of " +
      'uploads (decompressing, hashing) spreads over the workers, but commits do not get faster with more of ' +
      'them, so pushes of many small paths stay bounded by the disk whatever the core count. Access-tracking ' +
      'flushes skip a busy lock and retry a minute later, so they never stall a worker. Beyond that, ' +
      'PostgreSQL and S3 with several hosts is the way to scale writes.',
    '',
    "- **Memory.** Each worker is a whole Node process with its own heap (the table's last column gives " +
      "the tree's resident memory) and its own copies of the caches' records, keys and up to 10 000 " +
      'rendered narinfos. A narinfo is rendered once per worker that serves it (10 s TTL), so the share of ' +
      'hits answered from memory falls as workers multiply, shifting some to SQLite reads, which cost more ' +
      'CPU than a hit from memory but still do not contend.',
    '',
    '- **Metrics and logs.** A scrape asks every worker for its metrics over IPC (cheap, once per scrape); ' +
      "log lines go to the shared stdout in writes of at most 4 KiB (PIPE_BUF), so journald's or the " +
      "pipe reader's throughput is shared by all workers: at tens of thousands of requests a second, " +
      '`access-log = 0.1` matters more than with one process.',
    '',
    'So on 8–64 cores, expect narinfo and NAR reads to scale with the cores (a little below linear: the ' +
      'kernel, the network and the client), uploads to stay bounded by the disk, and the default ' +
      '`workers = 1` to remain right for a cache that a single core keeps up with. `workers = "auto"` starts ' +
      'one per core the process may use.',
    '',
  ].join('\n');
}

async function writeReport(
  date: string,
  run: Parameters<typeof markdown>[1],
  results: readonly Result[],
  load: Load,
): Promise<void> {
  const file = join(REPO, 'docs', 'bench-workers.md');
  const options = (await prettier.resolveConfig(file)) ?? {};
  writeFileSync(
    file,
    await prettier.format(markdown(date, run, results, load), { ...options, parser: 'markdown' }),
  );
  log(`wrote ${file} (${statSync(file).size} bytes)`);
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  if (params.renderOnly) {
    const saved = JSON.parse(readFileSync(join(OUT, 'workers.json'), 'utf8')) as {
      date: string;
      params: Parameters<typeof markdown>[1];
      load: Load;
      results: Result[];
    };
    await writeReport(saved.date, saved.params, saved.results, saved.load);
    return;
  }
  const tmp = mkdtempSync(join(OUT, 'workers-run-'));
  const servers: RunningServer[] = [];
  const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').trim();
  const loadBefore = loadavg();
  try {
    log('building niche (tsc)');
    const nicheMain = await buildNiche(REPO, join(tmp, 'build'));
    const dataDir = join(tmp, 'data');
    log(`populating the data directory (${params.paths} paths)`);
    const populating = await startNiche({
      repo: REPO,
      dataDir,
      logFile: join(tmp, 'populate.log'),
      compiledMain: nicheMain,
    });
    let narinfos: string[];
    try {
      narinfos = await pushSmallPaths(
        populating.origin,
        await createPushToken(REPO, dataDir),
        params.paths,
        'workers-bench',
      );
    } finally {
      await populating.stop();
    }
    const pathsFile = writePaths(join(tmp, 'narinfos.txt'), narinfos);
    for (const count of params.counts) {
      log(`starting niche serve --workers ${count}`);
      servers.push(
        await startNiche({
          repo: REPO,
          dataDir,
          logFile: join(tmp, `niche-${count}.log`),
          compiledMain: nicheMain,
          args: ['--workers', String(count)],
        }),
      );
    }
    for (const server of servers) await measure(server, pathsFile, true);
    const rounds = servers.map((): Round[] => []);
    let busyPairs = 0;
    for (let pair = 0; pair < params.pairs; pair++) {
      await waitForQuiet({ maxOtherCores: params.maxOtherCores, maxWaitS: params.quietWaitS });
      const order = servers.map((_, index) => index);
      if (pair % 2 === 1) order.reverse();
      let busy = false;
      const shown: string[] = [];
      for (const index of order) {
        const server = servers[index];
        if (server === undefined) continue;
        const round = await measure(server, pathsFile);
        rounds[index]?.push(round);
        busy ||= round.otherCores > params.maxOtherCores;
        shown.push(
          `--workers ${params.counts[index]}: ${fmt(round.requestsPerSecond)}/s, ${fmt(round.cpuUsPerRequest, 1)} µs CPU`,
        );
      }
      if (busy) busyPairs++;
      log(`  pair ${pair + 1}${busy ? ' (others busy)' : ''}: ${shown.join('; ')}`);
    }
    const results: Result[] = params.counts.map((workers, index) => {
      const list = rounds[index] ?? [];
      return {
        workers,
        requestsPerSecond: median(list.map((r) => r.requestsPerSecond)),
        cpuUsPerRequest: median(list.map((r) => r.cpuUsPerRequest)),
        serverCores: median(list.map((r) => r.serverCores)),
        p99Ms: median(list.map((r) => r.p99Ms)),
        rssMiB: (servers[index]?.pids() ?? []).reduce((sum, pid) => sum + memoryOf(pid).rss, 0) / 2 ** 20,
        rounds: list,
      };
    });
    const date = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
    const load = { before: loadBefore, after: loadavg(), busyPairs, pairs: params.pairs };
    writeFileSync(join(OUT, 'workers.json'), JSON.stringify({ date, params, load, results }, null, 2) + '\n');
    await writeReport(date, params, results, load);
    for (const r of results) {
      log(
        `--workers ${r.workers}: ${fmt(r.requestsPerSecond)} requests/s, ${fmt(r.cpuUsPerRequest, 1)} µs CPU per request`,
      );
    }
  } finally {
    for (const server of servers) await server.stop();
    killAll();
    if (!params.keepTmp) rmSync(tmp, { recursive: true, force: true });
    else log(`kept ${tmp}`);
  }
}

// Ctrl-C: stop the servers started so far (the finally block above does not run on a signal).
process.once('SIGINT', () => {
  killAll();
  process.exit(130);
});
await main();
