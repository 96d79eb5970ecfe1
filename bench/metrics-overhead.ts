// `npm run bench:metrics`: what Prometheus metrics cost the request a binary cache answers most, a narinfo
// hit (issue 14, item 1; target: at most 3% of throughput). Two niche servers, identical but for the
// setting `metrics`: "off" (nothing counted at all) and "public" (every request counted, as with any
// setting but "off"), each with the same METRICS_PATHS small paths uploaded, are started in ONE process
// (a tsc build, as deployed), pinned to CPU 0, with wrk on CPU 1 (when there are two or more).
//
// Why one process: two processes of the same build differ by several percent in narinfo throughput
// between starts (code and heap layout, what the JIT decides), more than the cost measured here, and a
// shared machine adds more noise still; in one process both servers run the same compiled code on the
// same heap (and since the position of a server in the process might matter, there are two such
// processes, each server started first in one, with half the pairs each). wrk asks one server, then the other (the order alternating), in short runs; each pair's
// ratio on / off is kept, and the result is the median of those ratios, so a slow stretch falls on both
// halves of a pair or is voted out. A pair during which other processes used more than
// METRICS_MAX_OTHER_CORES is discarded and measured again (up to three times as many tries as pairs).
// The process-wide collectors of prom-client (a GC observer, an event-loop delay timer) run for both
// halves, so their cost, per GC and per 10 ms rather than per request, is bounded separately: the GCs
// per second under this load are read from the "on" server's own metrics and reported. The "on"
// server's counters are checked to have counted every request wrk saw. Writes
// bench/out/metrics-overhead.json and docs/bench-metrics.md.
//
// Needs wrk (apt-get install -y wrk).
//
// Parameters (environment variables):
//   METRICS_PATHS=1000           small paths in each cache (the narinfos wrk cycles through)
//   METRICS_PAIRS=20             pairs of runs kept (half with each server started first)
//   METRICS_DURATION_S=2         seconds per run
//   METRICS_CONNECTIONS=64       wrk connections
//   METRICS_MAX_OTHER_CORES=0.3  a pair during which other processes used more is measured again
//   METRICS_QUIET_WAIT_S=20      wait up to this long before each pair for other processes to calm down
//   METRICS_KEEP_TMP=0           1: keep the temporary directory (server logs)

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as prettier from 'prettier';
import { cpuSecondsOf, waitForQuiet, withLoad } from './load.js';
import { killAll, log, setAffinity, stopChild, track } from './proc.js';
import { buildNiche, createPushToken, pushSmallPaths, startNiche } from './servers.js';
import { runWrk, writePaths } from './wrk.js';
import { envNumber, median } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');
/** The target: metrics on keep at least 97% of the narinfo hit rate. */
const TARGET_RATIO = 0.97;

const params = {
  paths: envNumber('METRICS_PATHS', 1000),
  pairs: envNumber('METRICS_PAIRS', 20),
  durationS: envNumber('METRICS_DURATION_S', 2),
  connections: envNumber('METRICS_CONNECTIONS', 64),
  maxOtherCores: envNumber('METRICS_MAX_OTHER_CORES', 0.3),
  quietWaitS: envNumber('METRICS_QUIET_WAIT_S', 20),
  keepTmp: process.env.METRICS_KEEP_TMP === '1',
};

type Setting = 'off' | 'on';

interface Round {
  readonly requests: number;
  readonly requestsPerSecond: number;
  readonly cpuUsPerRequest: number;
  readonly p99Ms: number;
}

/** The two servers in one process: `niche serve`'s startServer twice, from the tsc build. */
function pairServerScript(build: string): string {
  const server = pathToFileURL(join(build, 'app', 'server.js')).href;
  const config = pathToFileURL(join(build, 'config.js')).href;
  return `
import { startServer } from ${JSON.stringify(server)};
import { loadServeConfig } from ${JSON.stringify(config)};
const [offData, onData, first] = process.argv.slice(2);
const both = [['off', offData, 'off'], ['on', onData, 'public']];
const servers = {};
for (const [setting, data, metrics] of first === 'on' ? both.reverse() : both) {
  const config = loadServeConfig({ data, listen: '127.0.0.1:0', logLevel: 'warn' }, { NICHE_METRICS: metrics });
  servers[setting] = await startServer(config);
}
process.stdout.write('PAIR_URLS ' + JSON.stringify({ off: servers.off.url, on: servers.on.url }) + '\\n');
process.once('SIGINT', () => {
  Promise.all(Object.values(servers).map((server) => server.close())).then(() => process.exit(0));
});
`;
}

interface PairServer {
  readonly child: ChildProcess;
  readonly origins: Record<Setting, string>;
}

/** The pair server, `first` started first (in case the position in the process matters; both are used). */
async function startPairServer(
  script: string,
  dataDirs: Record<Setting, string>,
  first: Setting,
  logFile: string,
): Promise<PairServer> {
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [script, dataDirs.off, dataDirs.on, first], {
      stdio: ['ignore', 'pipe', fd],
    });
  } finally {
    closeSync(fd);
  }
  track(child);
  const stdout = child.stdout;
  if (stdout === null) throw new Error('no stdout');
  const origins = await new Promise<Record<Setting, string>>((resolve, reject) => {
    let text = '';
    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => {
      text += chunk;
      const line = text.split('\n').find((l) => l.startsWith('PAIR_URLS '));
      if (line !== undefined) resolve(JSON.parse(line.slice('PAIR_URLS '.length)) as Record<Setting, string>);
    });
    child.once('exit', () => {
      reject(new Error(`the pair server exited before listening; see ${logFile}`));
    });
  });
  stdout.resume();
  return { child, origins };
}

/** The value of the sample `name{labels}` in a scrape (0 if absent). */
function sampleOf(text: string, line: string): number {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? 0 : Number(found.slice(line.length + 1));
}

/** Sum of every sample of `name` (any labels) in a scrape. */
function sumOf(text: string, name: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** One wrk run against `origin`, with the server process's CPU time and the other processes' load. */
async function measure(
  origin: string,
  pid: number,
  pathsFile: string,
  wrkCpu: number | undefined,
  warmup = false,
): Promise<{ round: Round; otherCores: number }> {
  const cpuBefore = cpuSecondsOf([pid]);
  const { value: result, otherCores } = await withLoad(() =>
    runWrk({
      origin,
      pathsFile,
      connections: params.connections,
      threads: 1,
      seconds: warmup ? 3 : params.durationS,
      expect: 'ok',
      warmup,
      ...(wrkCpu === undefined ? {} : { cpu: wrkCpu }),
    }),
  );
  const cpu = cpuSecondsOf([pid]) - cpuBefore;
  return {
    round: {
      requests: result.requests,
      requestsPerSecond: result.requestsPerSecond,
      cpuUsPerRequest: (cpu * 1e6) / Math.max(1, result.requests),
      p99Ms: result.latencyMs.p99,
    },
    otherCores,
  };
}

interface Summary {
  readonly medianRps: number;
  readonly medianCpuUs: number;
  readonly medianP99Ms: number;
}

function summarise(rounds: readonly Round[]): Summary {
  return {
    medianRps: median(rounds.map((round) => round.requestsPerSecond)),
    medianCpuUs: median(rounds.map((round) => round.cpuUsPerRequest)),
    medianP99Ms: median(rounds.map((round) => round.p99Ms)),
  };
}

interface Pair {
  readonly off: Round;
  readonly on: Round;
  readonly rpsRatio: number;
  readonly cpuRatio: number;
}

interface Results {
  readonly date: string;
  readonly machine: { readonly cpus: number; readonly model: string };
  readonly params: typeof params;
  readonly pinned: boolean;
  readonly off: Summary;
  readonly on: Summary;
  /** Medians of the pairs' ratios on / off. */
  readonly ratios: { readonly requestsPerSecond: number; readonly cpuPerRequest: number };
  readonly pairs: readonly Pair[];
  readonly discarded: number;
  /** Garbage collections per second of the process while the "on" server was loaded. */
  readonly gcPerSecond: number;
  readonly counted: { readonly answered: number; readonly counted: number };
}

const fmt = (value: number, digits = 0): string =>
  value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function markdown(results: Results): string {
  const row = (name: string, summary: Summary): string =>
    `| ${name} | ${fmt(summary.medianRps)} | ${fmt(summary.medianCpuUs, 1)} | ${fmt(summary.medianP99Ms, 2)} |`;
  const { ratios, params: p } = results;
  const verdict = ratios.requestsPerSecond >= TARGET_RATIO ? 'within' : 'outside';
  const spread = results.pairs.map((pair) => pair.rpsRatio).sort((a, b) => a - b);
  const quartile = (q: number): string => (spread[Math.floor((spread.length - 1) * q)] ?? 0).toFixed(3);
  return [
    '# Benchmark: the cost of Prometheus metrics',
    '',
    '<!-- Generated by `npm run bench:metrics` (bench/metrics-overhead.ts, which says how it measures); edits are overwritten. -->',
    '',
    `Run ${results.date} on ${results.machine.cpus} × ${results.machine.model}. Narinfo hits from a public ` +
      `cache (${p.paths} different narinfos cycled, wrk with ${p.connections} connections) of two servers in ` +
      'one process (two such processes, either server started first), one with `metrics = "off"` ' +
      '(nothing counted), one with metrics on, in pairs of ' +
      `${p.durationS} s runs, one against each (${results.pairs.length} pairs kept, ${results.discarded} ` +
      'measured again because other processes were busy)' +
      (results.pinned ? '; the process pinned to CPU 0, wrk to CPU 1.' : '.'),
    '',
    `**Metrics on / off: ${ratios.requestsPerSecond.toFixed(3)} of the narinfo request rate ` +
      `(${((1 - ratios.requestsPerSecond) * 100).toFixed(1)}% overhead) and ${ratios.cpuPerRequest.toFixed(3)} × ` +
      "the server's CPU per request**, medians of the pairs' ratios (the rate ratios' quartiles: " +
      `${quartile(0.25)}, ${quartile(0.5)}, ${quartile(0.75)}); ${verdict} the target of at most ` +
      `${((1 - TARGET_RATIO) * 100).toFixed(0)}% (issue 14).`,
    '',
    '| metrics | requests/s (median) | server CPU µs per request (median) | p99 ms (median) |',
    '| --- | ---: | ---: | ---: |',
    row('off', results.off),
    row('on', results.on),
    '',
    "prom-client's process-wide collectors ran during both halves: they cost per garbage collection and " +
      'per 10 ms timer tick, not per request. Under this load the process collected garbage ' +
      `${fmt(results.gcPerSecond, 1)} times per second, so a few microseconds per GC stay far below 0.1% ` +
      'of a core.',
    '',
    `The last "on" server counted ${fmt(results.counted.counted)} narinfo hits for the ` +
      `${fmt(results.counted.answered)} requests wrk saw it answer (a few more may be answered as wrk stops).`,
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  // Inside the repository, so the build finds node_modules and native/.
  const tmp = mkdtempSync(join(OUT, 'metrics-run-'));
  let pair: PairServer | undefined;
  try {
    log('building niche (tsc)');
    const nicheMain = await buildNiche(REPO, join(tmp, 'build'));
    const pinned = availableParallelism() >= 2;
    const wrkCpu = pinned ? 1 : undefined;
    const dataDirs: Record<Setting, string> = { off: join(tmp, 'data-off'), on: join(tmp, 'data-on') };
    let narinfos: string[] = [];
    for (const setting of ['off', 'on'] as const) {
      log(`populating the metrics-${setting} data directory (${params.paths} paths)`);
      const server = await startNiche({
        repo: REPO,
        dataDir: dataDirs[setting],
        logFile: join(tmp, 'populate.log'),
        compiledMain: nicheMain,
      });
      try {
        narinfos = await pushSmallPaths(
          server.origin,
          await createPushToken(REPO, dataDirs[setting]),
          params.paths,
          'metrics-bench',
        );
      } finally {
        await server.stop();
      }
    }
    const pathsFile = writePaths(join(tmp, 'narinfos.txt'), narinfos);
    const script = join(tmp, 'build', 'pair-server.mjs');
    writeFileSync(script, pairServerScript(join(tmp, 'build')));
    const pairs: Pair[] = [];
    let discarded = 0;
    let gcs = 0;
    let onSeconds = 0;
    let counted = { answered: 0, counted: 0 };
    // Two processes, the "off" server started first in one and second in the other, half the pairs each.
    for (const first of ['off', 'on'] as const) {
      const started = await startPairServer(script, dataDirs, first, join(tmp, 'pair-server.log'));
      pair = started;
      const pid = started.child.pid ?? 0;
      if (pinned) await setAffinity([pid], '0');
      let answeredOn = 0;
      // Unmeasured: code compiled, narinfos read into memory.
      for (const setting of ['off', 'on'] as const) {
        const warm = await measure(started.origins[setting], pid, pathsFile, wrkCpu, true);
        if (setting === 'on') answeredOn += warm.round.requests;
      }
      const scrape = async (): Promise<string> => (await fetch(`${started.origins.on}/metrics`)).text();
      const wanted = first === 'off' ? Math.ceil(params.pairs / 2) : params.pairs;
      for (let attempt = 0; pairs.length < wanted && attempt < params.pairs * 2; attempt++) {
        await waitForQuiet({ maxOtherCores: params.maxOtherCores, maxWaitS: params.quietWaitS });
        const order: Setting[] = attempt % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
        const runs: Partial<Record<Setting, { round: Round; otherCores: number }>> = {};
        for (const setting of order) {
          const before = setting === 'on' ? sumOf(await scrape(), 'nodejs_gc_duration_seconds_count') : 0;
          runs[setting] = await measure(started.origins[setting], pid, pathsFile, wrkCpu);
          if (setting === 'on') {
            gcs += sumOf(await scrape(), 'nodejs_gc_duration_seconds_count') - before;
            onSeconds += params.durationS;
          }
        }
        const { off, on } = runs;
        if (off === undefined || on === undefined) throw new Error('a run is missing');
        answeredOn += on.round.requests;
        const measured: Pair = {
          off: off.round,
          on: on.round,
          rpsRatio: on.round.requestsPerSecond / off.round.requestsPerSecond,
          cpuRatio: on.round.cpuUsPerRequest / off.round.cpuUsPerRequest,
        };
        const busy = Math.max(off.otherCores, on.otherCores);
        const what =
          `off ${fmt(measured.off.requestsPerSecond)}/s ${fmt(measured.off.cpuUsPerRequest, 1)} µs, ` +
          `on ${fmt(measured.on.requestsPerSecond)}/s ${fmt(measured.on.cpuUsPerRequest, 1)} µs: ` +
          `${measured.rpsRatio.toFixed(3)}, CPU ${measured.cpuRatio.toFixed(3)}`;
        if (busy > params.maxOtherCores) {
          discarded++;
          log(`  ${first} first: discarded (other processes used ${busy.toFixed(2)} cores): ${what}`);
          continue;
        }
        pairs.push(measured);
        log(`  ${first} first: pair ${pairs.length}: ${what}`);
      }
      counted = {
        answered: answeredOn,
        counted: sampleOf(await scrape(), 'niche_narinfo_lookups_total{cache="main",result="hit"}'),
      };
      if (counted.counted < counted.answered) {
        throw new Error(
          `the metrics-on server counted ${counted.counted} narinfo hits for ${counted.answered} answered`,
        );
      }
      pair = undefined;
      await stopChild(started.child, 'SIGINT', 15_000);
    }
    if (pairs.length === 0) throw new Error('no pair was measured on a quiet enough machine');
    const results: Results = {
      date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      machine: { cpus: availableParallelism(), model: cpus()[0]?.model ?? 'unknown' },
      params,
      pinned,
      off: summarise(pairs.map((p) => p.off)),
      on: summarise(pairs.map((p) => p.on)),
      ratios: {
        requestsPerSecond: median(pairs.map((p) => p.rpsRatio)),
        cpuPerRequest: median(pairs.map((p) => p.cpuRatio)),
      },
      pairs,
      discarded,
      gcPerSecond: onSeconds === 0 ? 0 : gcs / onSeconds,
      counted,
    };
    writeFileSync(join(OUT, 'metrics-overhead.json'), JSON.stringify(results, null, 2) + '\n');
    const file = join(REPO, 'docs', 'bench-metrics.md');
    const options = (await prettier.resolveConfig(file)) ?? {};
    writeFileSync(file, await prettier.format(markdown(results), { ...options, parser: 'markdown' }));
    log(`wrote ${file} and bench/out/metrics-overhead.json (${statSync(file).size} bytes)`);
    log(
      `metrics on / off: ${results.ratios.requestsPerSecond.toFixed(3)} of the request rate, ` +
        `${results.ratios.cpuPerRequest.toFixed(3)} × the CPU per request (medians of ${pairs.length} pairs)`,
    );
  } finally {
    if (pair !== undefined) await stopChild(pair.child, 'SIGINT', 15_000);
    killAll();
    if (!params.keepTmp) rmSync(tmp, { recursive: true, force: true });
    else log(`kept ${tmp}`);
  }
}

await main();
