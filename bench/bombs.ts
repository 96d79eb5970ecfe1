// `npm run bench:bombs`: compression bombs against niche while other clients download (issue 10, item 2).
// One niche process (a tsc build, as deployed) with a small --max-nar-size serves a cache of small paths.
// Two phases of the same length, in one run: a baseline, where wrk asks for narinfos (hits) and a second
// wrk downloads a NAR; then the same load while BOMBS_CLIENTS clients upload compression bombs (a NAR of
// BOMBS_NAR_MB MiB of zeros, through the strongest settings of the real compressors) of every kind in a
// loop, each of which must be refused with 413. Reported per phase: the other clients' narinfo rate and
// latency, the NAR download rate, niche's peak RSS (VmHWM, reset per phase, and VmRSS polled) and its
// event-loop delay (perf_hooks.monitorEventLoopDelay, loaded into the server with --import); for the
// attack, the bombs refused and how long each took. Writes bench/out/bombs.json and docs/bench-bombs.md.
//
// Needs wrk, and the xz, zstd and bzip2 CLIs (apt-get install -y wrk xz-utils zstd bzip2).
//
// Parameters (environment variables):
//   BOMBS_MAX_NAR_SIZE=10M     niche's --max-nar-size
//   BOMBS_NAR_MB=1024          NAR size a bomb expands to, MiB (bombs are cached in bench/out/bombs/)
//   BOMBS_CLIENTS=4            clients uploading bombs, each cycling through xz, zstd, bzip2, br
//   BOMBS_DURATION_S=20        seconds per phase
//   BOMBS_CONNECTIONS=16       wrk connections asking for narinfos
//   BOMBS_PATHS=500            small paths in the cache (their narinfos are what wrk asks for)
//   BOMBS_QUIET_WAIT_S=60      wait up to this long before each phase for other processes to calm down
//   BOMBS_KEEP_TMP=0           1: keep the temporary directory (server log)

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { narFileExtension } from '../src/nix/compression.js';
import { compressionBomb } from '../test/helpers/bombs.js';
import { fakeBaseName, fixture, narInfoText, sha256Nix32 } from '../test/helpers/nar-fixtures.js';
import { cpuSecondsOf, waitForQuiet, withLoad } from './load.js';
import { killAll, log, memoryOf } from './proc.js';
import { buildNiche, createPushToken, pusher, startNiche, type RunningServer } from './servers.js';
import { runWrk, writePaths, type WrkResult } from './wrk.js';
import { envNumber } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');
const KINDS = ['xz', 'zstd', 'bzip2', 'br'] as const;
type Kind = (typeof KINDS)[number];
const MiB = 1 << 20;
/** The compressors' strongest settings: the largest dictionary, window or ring buffer a decoder may need. */
const STRONGEST: Readonly<Record<Kind, readonly string[]>> = {
  xz: ['-9e'],
  zstd: ['--ultra', '-22'],
  bzip2: ['-9'],
  br: ['11'],
};
/** Targets from the issue. */
const TARGET_RSS = 250 * MiB;
const TARGET_P99_MS = 50;

const params = {
  maxNarSize: process.env.BOMBS_MAX_NAR_SIZE ?? '10M',
  narMb: envNumber('BOMBS_NAR_MB', 1024),
  clients: envNumber('BOMBS_CLIENTS', 4),
  durationS: envNumber('BOMBS_DURATION_S', 20),
  connections: envNumber('BOMBS_CONNECTIONS', 16),
  paths: envNumber('BOMBS_PATHS', 500),
  quietWaitS: envNumber('BOMBS_QUIET_WAIT_S', 60),
  keepTmp: process.env.BOMBS_KEEP_TMP === '1',
};

/**
 * Loaded into niche with --import: its event-loop delay, written as JSON to BENCH_LOOP_FILE and reset on
 * each SIGUSR2. A data: URL, so nothing is added to the server's sources.
 */
const LOOP_MONITOR = `data:text/javascript,${encodeURIComponent(`
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { writeFileSync } from 'node:fs';
const file = process.env.BENCH_LOOP_FILE;
if (file) {
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  let seq = 0;
  process.on('SIGUSR2', () => {
    seq += 1;
    const ms = (ns) => ns / 1e6;
    writeFileSync(file, JSON.stringify({ seq, maxMs: ms(delay.max), p99Ms: ms(delay.percentile(99)),
      p50Ms: ms(delay.percentile(50)), meanMs: ms(delay.mean) }));
    delay.reset();
  });
}`)}`;

interface LoopDelay {
  readonly seq: number;
  readonly maxMs: number;
  readonly p99Ms: number;
  readonly p50Ms: number;
  readonly meanMs: number;
}

/** Asks the server for its event-loop delay since the last call (and resets it). */
async function loopDelay(pid: number, file: string): Promise<LoopDelay> {
  const before = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as LoopDelay).seq : 0;
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 200; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    if (!existsSync(file)) continue;
    const value = JSON.parse(readFileSync(file, 'utf8')) as LoopDelay;
    if (value.seq > before) return value;
  }
  throw new Error('the server did not report its event-loop delay');
}

interface Bomb {
  readonly kind: Kind;
  readonly file: Buffer;
  readonly url: string;
}

/** The bombs, made once and kept in bench/out/bombs/. */
async function makeBombs(origin: string): Promise<Bomb[]> {
  const dir = join(OUT, 'bombs');
  mkdirSync(dir, { recursive: true });
  const bombs: Bomb[] = [];
  for (const kind of KINDS) {
    const path = join(dir, `${kind}-${params.narMb}M${narFileExtension(kind)}`);
    if (!existsSync(path)) {
      const started = performance.now();
      writeFileSync(path, await compressionBomb(kind, params.narMb * MiB, STRONGEST[kind]));
      log(`  made ${path} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    }
    const file = readFileSync(path);
    bombs.push({ kind, file, url: `${origin}/main/nar/${sha256Nix32(file)}.nar${narFileExtension(kind)}` });
  }
  return bombs;
}

/** Small paths (zstd) and one NAR to download (8 MiB, none), pushed over HTTP as Nix would. */
async function populate(server: RunningServer, token: string): Promise<{ narinfos: string[]; nar: string }> {
  const put = pusher(server.origin, token);
  const narinfos: string[] = [];
  let nar = '';
  for (let i = 0; i <= params.paths; i++) {
    const large = i === params.paths;
    const contents = large ? Buffer.alloc(8 * MiB, i) : `path ${i}\n`.repeat(1 + ((i * 7919) % 2000));
    const fx = await fixture(contents, large ? 'none' : 'zstd');
    const base = fakeBaseName(`bomb-bench-${i}`);
    await put(`/main/nar/${fx.fileName}`, fx.file);
    await put(`/main/${base.slice(0, 32)}.narinfo`, narInfoText(base, fx));
    if (large) nar = `/main/nar/${fx.fileName}`;
    else narinfos.push(`/main/${base.slice(0, 32)}.narinfo`);
  }
  return { narinfos, nar };
}

interface AttackResult {
  readonly uploads: number;
  readonly refused413: number;
  readonly otherAnswers: number;
  readonly medianMs: number;
  readonly maxMs: number;
}

/** `clients` loops uploading the bombs round-robin until `stop()`. */
function attack(bombs: readonly Bomb[], token: string): { stop(): Promise<AttackResult> } {
  let running = true;
  const times: number[] = [];
  let refused413 = 0;
  let otherAnswers = 0;
  const authorization = `Basic ${Buffer.from(`niche:${token}`).toString('base64')}`;
  const loops = Array.from({ length: params.clients }, async (_, client) => {
    for (let i = client; running; i++) {
      const bomb = bombs[i % bombs.length];
      if (bomb === undefined) return;
      const started = performance.now();
      try {
        const response = await fetch(bomb.url, {
          method: 'PUT',
          body: bomb.file,
          headers: { authorization },
        });
        await response.arrayBuffer();
        if (response.status === 413) refused413++;
        else otherAnswers++;
      } catch {
        otherAnswers++;
      }
      times.push(performance.now() - started);
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      const sorted = [...times].sort((a, b) => a - b);
      return {
        uploads: times.length,
        refused413,
        otherAnswers,
        medianMs: sorted[Math.floor(sorted.length / 2)] ?? 0,
        maxMs: sorted[sorted.length - 1] ?? 0,
      };
    },
  };
}

interface PhaseResult {
  readonly label: string;
  readonly narinfo: WrkResult;
  readonly nar: WrkResult;
  readonly peakRss: number;
  readonly loop: LoopDelay;
  readonly serverCpuSeconds: number;
  readonly otherCores: number;
  readonly attack?: AttackResult;
}

async function phase(
  label: string,
  server: RunningServer,
  files: { narinfos: string; nar: string; loop: string },
  bombs: readonly Bomb[] | undefined,
  token: string,
): Promise<PhaseResult> {
  const pid = server.pid;
  await waitForQuiet({ maxOtherCores: 0.25, maxWaitS: params.quietWaitS });
  writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM
  let polled = memoryOf(pid).rss;
  const poll = setInterval(() => {
    polled = Math.max(polled, memoryOf(pid).rss);
  }, 50);
  await loopDelay(pid, files.loop);
  const cpuBefore = cpuSecondsOf([pid]);
  const attacking = bombs === undefined ? undefined : attack(bombs, token);
  let narinfo: WrkResult;
  let nar: WrkResult;
  let otherCores: number;
  try {
    ({
      value: [narinfo, nar],
      otherCores,
    } = await withLoad(() =>
      Promise.all([
        runWrk({
          origin: server.origin,
          pathsFile: files.narinfos,
          connections: params.connections,
          threads: 1,
          seconds: params.durationS,
          expect: 'ok',
        }),
        runWrk({
          origin: server.origin,
          pathsFile: files.nar,
          connections: 1,
          threads: 1,
          seconds: params.durationS,
          expect: 'ok',
        }),
      ]),
    ));
  } finally {
    clearInterval(poll);
  }
  const attackResult = await attacking?.stop();
  const loop = await loopDelay(pid, files.loop);
  const serverCpuSeconds = cpuSecondsOf([pid]) - cpuBefore;
  const peakRss = Math.max(polled, memoryOf(pid).hwm);
  const result: PhaseResult = {
    label,
    narinfo,
    nar,
    peakRss,
    loop,
    serverCpuSeconds,
    otherCores,
    ...(attackResult === undefined ? {} : { attack: attackResult }),
  };
  log(
    `  ${label}: narinfo ${narinfo.requestsPerSecond.toFixed(0)} req/s p99 ${narinfo.latencyMs.p99.toFixed(1)} ms, ` +
      `NAR ${nar.megabytesPerSecond.toFixed(0)} MB/s, peak RSS ${(peakRss / MiB).toFixed(0)} MiB, ` +
      `event loop max ${loop.maxMs.toFixed(1)} ms` +
      (attackResult === undefined
        ? ''
        : `, bombs ${attackResult.refused413}/${attackResult.uploads} refused with 413 (median ${attackResult.medianMs.toFixed(0)} ms)`),
  );
  return result;
}

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;
const ms = (value: number): string => `${value.toFixed(1)} ms`;

function markdown(results: {
  date: string;
  seconds: number;
  bombSizes: Record<string, number>;
  startRss: number;
  afterRss: number;
  baseline: PhaseResult;
  attack: PhaseResult;
}): string {
  const { baseline, attack: attacked } = results;
  const ratio = (a: number, b: number): string => (b === 0 ? '–' : `${(a / b).toFixed(2)}×`);
  const pass = (ok: boolean): string => (ok ? 'pass' : 'FAIL');
  const rows: string[][] = [
    [
      'other clients: narinfo p99',
      ms(baseline.narinfo.latencyMs.p99),
      ms(attacked.narinfo.latencyMs.p99),
      ratio(attacked.narinfo.latencyMs.p99, baseline.narinfo.latencyMs.p99),
      `≤ ${TARGET_P99_MS} ms`,
      pass(attacked.narinfo.latencyMs.p99 <= TARGET_P99_MS),
    ],
    [
      'other clients: narinfo median',
      ms(baseline.narinfo.latencyMs.p50),
      ms(attacked.narinfo.latencyMs.p50),
      ratio(attacked.narinfo.latencyMs.p50, baseline.narinfo.latencyMs.p50),
      '',
      '',
    ],
    [
      'other clients: narinfo rate',
      `${baseline.narinfo.requestsPerSecond.toFixed(0)}/s`,
      `${attacked.narinfo.requestsPerSecond.toFixed(0)}/s`,
      ratio(attacked.narinfo.requestsPerSecond, baseline.narinfo.requestsPerSecond),
      '',
      '',
    ],
    [
      'other clients: NAR download (8 MiB, c=1)',
      `${baseline.nar.megabytesPerSecond.toFixed(0)} MB/s`,
      `${attacked.nar.megabytesPerSecond.toFixed(0)} MB/s`,
      ratio(attacked.nar.megabytesPerSecond, baseline.nar.megabytesPerSecond),
      '',
      '',
    ],
    [
      'niche peak RSS',
      mib(baseline.peakRss),
      mib(attacked.peakRss),
      ratio(attacked.peakRss, baseline.peakRss),
      `≤ ${mib(TARGET_RSS)}`,
      pass(attacked.peakRss <= TARGET_RSS),
    ],
    [
      'niche event-loop delay, max',
      ms(baseline.loop.maxMs),
      ms(attacked.loop.maxMs),
      ratio(attacked.loop.maxMs, baseline.loop.maxMs),
      '',
      '',
    ],
    ['niche event-loop delay, p99', ms(baseline.loop.p99Ms), ms(attacked.loop.p99Ms), '', '', ''],
    [
      'niche CPU',
      `${baseline.serverCpuSeconds.toFixed(1)} s`,
      `${attacked.serverCpuSeconds.toFixed(1)} s`,
      '',
      '',
      '',
    ],
    [
      'other CPU (cores used outside the benchmark)',
      baseline.otherCores.toFixed(2),
      attacked.otherCores.toFixed(2),
      '',
      '',
      '',
    ],
  ];
  const table = [
    '| metric | baseline | under attack | attack/baseline | target | |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ].join('\n');
  const a = attacked.attack;
  const sizes = KINDS.map((kind) => `${kind} ${results.bombSizes[kind] ?? 0} bytes`).join(', ');
  return `# Benchmark: compression bombs

<!-- Generated by \`npm run bench:bombs\` (bench/bombs.ts); edits are overwritten. Raw numbers: bench/out/bombs.json. -->

Issue 10, item 2: while ${params.clients} clients upload compression bombs in a loop, other clients must still be served, and niche's memory must stay bounded. Run of ${results.date}, ${results.seconds.toFixed(0)} s in all, on ${availableParallelism()} × ${cpus()[0]?.model.trim() ?? 'unknown CPU'} (shared with other work: see _other CPU_), ${process.version}.

${table}

- **Attack.** ${a?.uploads ?? 0} bomb uploads in ${params.durationS} s, ${a?.refused413 ?? 0} refused with 413 (${a?.otherAnswers ?? 0} other answers); each answered in ${ms(a?.medianMs ?? 0)} (median), ${ms(a?.maxMs ?? 0)} at most. Each bomb is a NAR of ${params.narMb} MiB (one file of zeros) through the compressors' strongest settings (\`xz -9e\`, \`zstd --ultra -22\`, \`bzip2 -9\`, brotli quality 11): ${sizes}.
- **Memory after.** niche's RSS was ${mib(results.startRss)} before the first phase and ${mib(results.afterRss)} 5 s after the attack (no forced GC).
- **Setup.** One niche process (tsc build) with \`--max-nar-size ${params.maxNarSize}\`, ${params.paths} small paths (zstd) and one 8 MiB NAR; wrk with ${params.connections} connections asks for their narinfos, a second wrk (1 connection) downloads the NAR, both for ${params.durationS} s per phase. Peak RSS: VmHWM reset through \`/proc/<pid>/clear_refs\` at the start of each phase, and VmRSS polled every 50 ms. Event-loop delay: \`monitorEventLoopDelay\` (5 ms resolution) inside niche, loaded with \`--import\`. Load is closed-loop: wrk keeps every connection busy, so latencies include queueing behind the other connections.
`;
}

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(OUT, { recursive: true });
  // Inside the repository, so the build finds node_modules and native/.
  const tmp = mkdtempSync(join(OUT, 'bombs-run-'));
  let server: RunningServer | undefined;
  try {
    log('building niche (tsc)');
    const nicheMain = await buildNiche(REPO, join(tmp, 'build'));
    const dataDir = join(tmp, 'data');
    const loopFile = join(tmp, 'loop.json');
    process.env.BENCH_LOOP_FILE = loopFile;
    server = await startNiche({
      repo: REPO,
      dataDir,
      logFile: join(tmp, 'niche.log'),
      compiledMain: nicheMain,
      args: ['--max-nar-size', params.maxNarSize],
      nodeArgs: ['--import', LOOP_MONITOR],
    });
    const token = await createPushToken(REPO, dataDir);
    log(`populating (${params.paths} paths)`);
    const { narinfos, nar } = await populate(server, token);
    log('making bombs');
    const bombs = await makeBombs(server.origin);
    const files = {
      narinfos: writePaths(join(tmp, 'narinfos.txt'), narinfos),
      nar: writePaths(join(tmp, 'nar.txt'), [nar]),
      loop: loopFile,
    };
    // One of each, untimed: code compiled and memory first touched on first use is not the attack's.
    for (const bomb of bombs) await attack([bomb], token).stop();
    const startRss = memoryOf(server.pid).rss;
    log('measuring');
    const baseline = await phase('baseline', server, files, undefined, token);
    const attacked = await phase('under attack', server, files, bombs, token);
    await new Promise((resolve) => setTimeout(resolve, 5000));
    const afterRss = memoryOf(server.pid).rss;
    const results = {
      date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      seconds: (performance.now() - started) / 1000,
      params,
      bombSizes: Object.fromEntries(bombs.map((bomb) => [bomb.kind, bomb.file.length])),
      startRss,
      afterRss,
      baseline,
      attack: attacked,
    };
    mkdirSync(OUT, { recursive: true });
    writeFileSync(join(OUT, 'bombs.json'), JSON.stringify(results, null, 2) + '\n');
    const file = join(REPO, 'docs', 'bench-bombs.md');
    const options = (await prettier.resolveConfig(file)) ?? {};
    writeFileSync(file, await prettier.format(markdown(results), { ...options, parser: 'markdown' }));
    log(`wrote ${file} and bench/out/bombs.json (${statSync(file).size} bytes)`);
  } finally {
    await server?.stop();
    killAll();
    if (!params.keepTmp) rmSync(tmp, { recursive: true, force: true });
    else log(`kept ${tmp}`);
  }
}

await main();
