// `npm run bench`: niche against nginx serving the same binary cache as static files, on loopback, in one
// run. Builds (or reuses) a corpus of store paths with Nix, pushes it to a fresh niche and with
// `nix copy --to file://` to a fresh directory (timing both), serves that directory with nginx, then
// measures both servers with wrk (narinfo hits and misses, NAR downloads), `nix copy --from` of a
// closure (hyperfine), and niche's peak memory around a multi-GiB NAR upload and download. Writes
// bench/out/results.json, docs/benchmarks.json and docs/benchmarks.md, and prints the table.
//
// Needs nix (2.8, single-user as root works), nginx, wrk and hyperfine:
//   apt-get install -y nix-bin nginx-light wrk hyperfine
//
// Parameters (environment variables; bench/params.ts has the definitions):
//   BENCH_SMALL_COUNT=2000       number of small store paths
//   BENCH_SMALL_MIN_KB=1         smallest small path, KiB (sizes are log-uniform)
//   BENCH_SMALL_MAX_KB=50        largest small path, KiB
//   BENCH_MEDIUM_MB=10,40,100    sizes of the medium paths, MiB ('' for none)
//   BENCH_LARGE_MB=1024          size of the large path, MiB (0: none)
//   BENCH_CLOSURE_SIZE=200       small paths referenced by the top-level path (closure copy)
//   BENCH_COMPRESSION=xz         compression of the small paths and the closure: xz, zstd, none
//   BENCH_BULK_COMPRESSION=zstd  compression of the medium and large paths (xz: ~1.5 MB/s here)
//   BENCH_DURATION_S=10          seconds per measured wrk run
//   BENCH_WARMUP_S=2             seconds of unmeasured load before each wrk run
//   BENCH_CONNECTIONS=64         connections of the concurrent narinfo runs
//   BENCH_NAR_CONNECTIONS=8      connections of the concurrent NAR run
//   BENCH_WRK_THREADS=1          wrk threads
//   BENCH_ROUNDS=2               rounds of each wrk scenario per server; the best round is reported
//   BENCH_PIN_C1=1               c=1 narinfo/small-NAR runs: wrk and the server on one CPU (VM wake-ups dominate)
//   BENCH_CLOSURE_RUNS=3         hyperfine runs per closure copy
//   BENCH_HUGE_GB=4              NAR size for the peak-RSS check, GiB (0: skip)
//   BENCH_QUIET_WAIT_S=30        wait up to this long before each measurement for other processes to calm down
//   BENCH_SEED=1                 seed of the corpus sizes and missing hashes
//   BENCH_CPU_PROF=0             1: also profile niche (--cpu-prof into bench/out) during a narinfo c=N run
//   BENCH_KEEP_TMP=0             1: keep the temporary directory (server logs, trees)
// With the defaults a run takes about 10 minutes on 2 cores (the first one also builds the corpus).

import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NIX32_ALPHABET } from '../src/nix/nix32.js';
import { buildCorpus, hashPart, narUrlOf, nixEnv, prng, type Corpus } from './corpus.js';
import { summariseProfile, type ProfileSummary } from './cpu-profile.js';
import { hugeNarRoundTrip } from './huge-nar.js';
import { startNullServer } from './null-server.js';
import { cpuSecondsOf, waitForQuiet, withLoad } from './load.js';
import { ParamError, paramValues, parseParams, type BenchParams } from './params.js';
import { CommandError, elapsed, killAll, log, run, setAffinity } from './proc.js';
import {
  buildRows,
  consoleTable,
  writeReports,
  type HugeResult,
  type Loaded,
  type Machine,
  type Pair,
  type PushTimes,
  type Results,
  type RoundSummary,
  type ServedResult,
  type TimingStats,
  type WrkPair,
} from './report.js';
import { buildNiche, createPushToken, startNginx, startNiche, type RunningServer } from './servers.js';
import { runWrk, writePaths, type WrkOptions, type WrkResult } from './wrk.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');
// nginx runs with `access_log off` (bench/servers.ts); niche's access log (on by default) is off too, so
// both serve without logging. What logging costs is bench:ops's question (docs/bench-ops.md).
const NICHE_ENV = { ...process.env, NICHE_ACCESS_LOG: 'off' };

async function versionOf(cmd: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(cmd, args);
    return (stdout + stderr).trim().split('\n')[0] ?? '';
  } catch (error) {
    // `wrk --version` prints its version and exits with 1.
    if (error instanceof CommandError) {
      const text = (error.stdout + error.stderr).trim().split('\n')[0] ?? '';
      if (text !== '') return text;
    }
    throw new Error(`${cmd} is required (apt-get install -y nix-bin nginx-light wrk hyperfine)`, {
      cause: error,
    });
  }
}

function readOptional(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

async function machine(): Promise<Machine> {
  return {
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryBytes: totalmem(),
    kernel: `Linux ${release()}`,
    cpuidle: readOptional('/sys/devices/system/cpu/cpuidle/current_driver') ?? 'unknown',
    node: process.version,
    nginx: (await versionOf('nginx', ['-v'])).replace(/^nginx version: /, ''),
    wrk: (await versionOf('wrk', ['--version'])).replace(/ \[.*$/, '').replace(/ Copyright.*$/, ''),
    nix: await versionOf('nix', ['--version']),
    hyperfine: await versionOf('hyperfine', ['--version']),
  };
}

/** `nix copy --to <url> <paths>`: its wall time, after waiting for a quiet machine. */
async function nixCopyTo(
  params: BenchParams,
  url: string,
  paths: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<Loaded<{ seconds: number }>> {
  await quiet(params);
  const { value, otherCores } = await withLoad(() => run('nix', ['copy', '--to', url, ...paths], { env }));
  return { seconds: value.seconds, otherCores };
}

function randomHashes(count: number, seed: number): string[] {
  const random = prng(seed ^ 0x5eed);
  return Array.from({ length: count }, () =>
    Array.from({ length: 32 }, () => NIX32_ALPHABET[Math.floor(random() * 32)] ?? '0').join(''),
  );
}

/** Runs `measure` for niche and nginx, alternating which goes first so neither always runs cold. */
async function both<T>(
  servers: Pair<RunningServer>,
  nicheFirst: boolean,
  measure: (server: RunningServer) => Promise<T>,
): Promise<Pair<T>> {
  if (nicheFirst) {
    const niche = await measure(servers.niche);
    return { niche, nginx: await measure(servers.nginx) };
  }
  const nginx = await measure(servers.nginx);
  return { niche: await measure(servers.niche), nginx };
}

interface Scenario {
  readonly label: string;
  readonly paths: Pair<string>;
  readonly connections: number;
  readonly expect: WrkOptions['expect'];
  readonly timeoutSeconds?: number;
  /** Which rate picks the best round: requests (narinfo, small NARs) or bytes (large NARs). */
  readonly rank: 'requests' | 'bytes';
}

/**
 * Runs a scenario for both servers `BENCH_ROUNDS` times, alternating which goes first, and keeps each
 * server's best round (by `scenario.rank`): on a shared machine the best of a few runs is the one least
 * disturbed by others. Every round is kept in `rounds`. Only the first round is preceded by a warm-up.
 */
async function wrkScenario(
  params: BenchParams,
  servers: Pair<RunningServer>,
  scenario: Scenario,
  nicheFirst: boolean,
): Promise<WrkPair> {
  const rounds: Pair<ServedResult[]> = { niche: [], nginx: [] };
  for (let round = 0; round < params.rounds; round++) {
    const results = await both(servers, nicheFirst !== (round % 2 === 1), async (server) => {
      const options: WrkOptions = {
        origin: server.origin,
        pathsFile: scenario.paths[server.name],
        connections: scenario.connections,
        threads: params.wrkThreads,
        seconds: params.durationS,
        expect: scenario.expect,
        ...(scenario.timeoutSeconds === undefined ? {} : { timeoutSeconds: scenario.timeoutSeconds }),
      };
      await quiet(params);
      // Request-rate runs only: a large NAR transfer is not bound by wake-ups, and one CPU would halve it.
      const pin = params.pinC1 && scenario.connections === 1 && scenario.rank === 'requests';
      const pinned = pin ? { ...options, cpu: LAST_CPU } : options;
      if (pin) await setAffinity(server.pids(), String(LAST_CPU));
      let value: WrkResult;
      let otherCores: number;
      let serverCpuSeconds: number;
      try {
        if (round === 0 && params.warmupS > 0)
          await runWrk({ ...pinned, seconds: params.warmupS, warmup: true });
        const pids = server.pids();
        const cpuBefore = cpuSecondsOf(pids);
        ({ value, otherCores } = await withLoad(() => runWrk(pinned)));
        serverCpuSeconds = cpuSecondsOf(pids) - cpuBefore;
      } finally {
        if (pin) await setAffinity(server.pids(), ALL_CPUS);
      }
      log(
        `  ${scenario.label} ${server.name}: ${value.requestsPerSecond.toFixed(0)} req/s, ` +
          `${value.megabytesPerSecond.toFixed(0)} MB/s, p50 ${value.latencyMs.p50.toFixed(2)} ms, ` +
          `p99 ${value.latencyMs.p99.toFixed(2)} ms, server CPU ${serverCpuSeconds.toFixed(1)} s, ` +
          `other CPU ${otherCores.toFixed(2)}`,
      );
      return { ...value, otherCores, serverCpuSeconds };
    });
    rounds.niche.push(results.niche);
    rounds.nginx.push(results.nginx);
  }
  const rate = (r: WrkResult): number =>
    scenario.rank === 'bytes' ? r.megabytesPerSecond : r.requestsPerSecond;
  const best = (list: ServedResult[]): ServedResult & { rounds: RoundSummary[] } => {
    const top = list.reduce((a, b) => (rate(b) > rate(a) ? b : a));
    return { ...top, rounds: list.map(summariseRound) };
  };
  return { niche: best(rounds.niche), nginx: best(rounds.nginx) };
}

function summariseRound(r: ServedResult): RoundSummary {
  return {
    requestsPerSecond: r.requestsPerSecond,
    megabytesPerSecond: r.megabytesPerSecond,
    p50Ms: r.latencyMs.p50,
    p99Ms: r.latencyMs.p99,
    serverCpuSeconds: r.serverCpuSeconds,
    otherCores: r.otherCores,
  };
}

const LAST_CPU = availableParallelism() - 1;
const ALL_CPUS = `0-${LAST_CPU}`;

/** Waits for other processes on the machine to calm down (bench/load.ts). */
function quiet(params: BenchParams): Promise<void> {
  return waitForQuiet({ maxOtherCores: 0.25, maxWaitS: params.quietWaitS });
}

function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

interface HyperfineJson {
  results: {
    mean: number;
    stddev: number | null;
    median: number;
    min: number;
    max: number;
    times: number[];
  }[];
}

/** `nix copy --from <server> --to local?root=<empty>` of the closure, timed by hyperfine. */
async function closureCopy(
  params: BenchParams,
  server: RunningServer,
  corpus: Corpus,
  tmp: string,
  home: string,
): Promise<Loaded<TimingStats>> {
  const root = join(tmp, `closure-${server.name}`);
  const store = `local?root=${root}`;
  const json = join(tmp, `hyperfine-${server.name}.json`);
  const command = ['nix', 'copy', '--no-check-sigs', '--from', server.storeUrl, '--to', store, corpus.top]
    .map(shellQuote)
    .join(' ');
  const env = nixEnv(home);
  await quiet(params);
  const { otherCores } = await withLoad(() =>
    run(
      'hyperfine',
      [
        '--runs',
        String(params.closureRuns),
        '--prepare',
        `rm -rf ${shellQuote(root)} ${shellQuote(join(home, '.cache'))}`,
        '--export-json',
        json,
        '--command-name',
        server.name,
        command,
      ],
      { env },
    ),
  );
  // The last run's copy is still there: check that it is complete.
  const { stdout } = await run('nix', ['path-info', '--store', store, '--recursive', corpus.top], { env });
  const copied = stdout.split('\n').filter((line) => line !== '').length;
  if (copied !== corpus.closure.length + 1) {
    throw new Error(
      `closure copy from ${server.name} has ${copied} paths, expected ${corpus.closure.length + 1}`,
    );
  }
  rmSync(root, { recursive: true, force: true });
  const stats = (JSON.parse(readFileSync(json, 'utf8')) as HyperfineJson).results[0];
  if (stats === undefined) throw new Error(`no results in ${json}`);
  return {
    mean: stats.mean,
    median: stats.median,
    stddev: stats.stddev ?? 0,
    min: stats.min,
    max: stats.max,
    runs: stats.times.length,
    otherCores,
  };
}

/** A wrk paths file per server, `<dir>/<name>-<server>.txt`, with the request paths `make` lists. */
function pathsFiles(
  dir: string,
  name: string,
  servers: Pair<RunningServer>,
  make: (server: RunningServer) => string[],
): Pair<string> {
  return {
    niche: writePaths(join(dir, `${name}-niche.txt`), make(servers.niche)),
    nginx: writePaths(join(dir, `${name}-nginx.txt`), make(servers.nginx)),
  };
}

/** A wrk paths file per server with the NAR of each store path, from the narinfos they serve. */
async function narPaths(
  servers: Pair<RunningServer>,
  storePaths: readonly string[],
  dir: string,
  name: string,
): Promise<Pair<string>> {
  const lists: Pair<string[]> = { niche: [], nginx: [] };
  for (const storePath of storePaths) {
    for (const server of [servers.niche, servers.nginx]) {
      const response = await fetch(`${server.storeUrl}/${hashPart(storePath)}.narinfo`);
      const text = await response.text();
      if (response.status !== 200) throw new Error(`${server.name}: no narinfo for ${storePath}`);
      lists[server.name].push(`${server.prefix}/${narUrlOf(text)}`);
    }
  }
  return pathsFiles(dir, name, servers, (server) => lists[server.name]);
}

/**
 * Profiles niche under narinfo hits at c=N: a separate process under `node --cpu-prof`, profiling only the
 * measured run. It runs a tsc build of src (as `bin/niche.js` runs dist/) rather than tsx, whose
 * whitespace-minified output would leave every position in the profile on one line.
 */
async function profileNarinfo(
  params: BenchParams,
  nicheMain: string,
  dataDir: string,
  tmp: string,
  hitPaths: string,
): Promise<ProfileSummary> {
  mkdirSync(OUT, { recursive: true });
  const niche = await startNiche({
    repo: REPO,
    dataDir,
    logFile: join(tmp, 'niche-profiled.log'),
    cpuProfDir: OUT,
    compiledMain: nicheMain,
    env: NICHE_ENV,
  });
  let window: { fromMs: number; toMs: number };
  try {
    const options: WrkOptions = {
      origin: niche.origin,
      pathsFile: hitPaths,
      connections: params.connections,
      threads: params.wrkThreads,
      seconds: params.durationS,
      expect: 'ok',
    };
    if (params.warmupS > 0) await runWrk({ ...options, seconds: params.warmupS });
    // The profile's clock starts shortly after the spawn; trim the edges so no start-up or idle tail is in.
    const from = performance.now() - niche.spawnedAt + 200;
    const result = await runWrk(options);
    window = { fromMs: from, toMs: performance.now() - niche.spawnedAt - 200 };
    log(`  profiled run: ${result.requestsPerSecond.toFixed(0)} req/s (under --cpu-prof)`);
  } finally {
    await niche.stop();
  }
  const file = readdirSync(OUT)
    .filter((name) => name.endsWith('.cpuprofile') && name.includes(`.${niche.pid}.`))
    .map((name) => join(OUT, name))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (file === undefined) throw new Error(`niche (pid ${niche.pid}) wrote no .cpuprofile into ${OUT}`);
  return summariseProfile(file, REPO, window);
}

async function main(): Promise<void> {
  const started = performance.now();
  const params = parseParams(process.env);
  const values = paramValues(process.env);
  const host = await machine();
  log(`${host.cpus} × ${host.cpuModel}, node ${host.node}, nginx ${host.nginx}, ${host.nix}`);

  // Under bench/out rather than /tmp: on a shared machine, other people's clean-ups sweep /tmp/niche-*.
  mkdirSync(OUT, { recursive: true });
  const tmp = mkdtempSync(join(OUT, 'run-'));
  const servers: RunningServer[] = [];
  const onSignal = (signal: NodeJS.Signals): void => {
    log(`${signal}: stopping`);
    killAll();
    if (!params.keepTmp) rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const home = join(tmp, 'home');
    mkdirSync(home, { recursive: true });

    // 1. The corpus, and niche compiled.
    let t = performance.now();
    const nicheMain = await buildNiche(REPO, join(tmp, 'build'));
    log(`  compiled niche in ${elapsed(t)}`);
    t = performance.now();
    log('building the corpus (reused from /nix/store when the parameters did not change)');
    const corpus = await buildCorpus(params, {
      workDir: join(tmp, 'corpus'),
      gcRoot: join(OUT, 'corpus-gcroot'),
      env: nixEnv(home),
    });
    const buildSeconds = (performance.now() - t) / 1000;
    const bulk = [...corpus.medium, ...corpus.large];
    log(
      `  ${corpus.small.length} small, ${corpus.medium.length} medium, ${corpus.large.length} large paths in ${elapsed(t)}`,
    );

    // 2. Push to a fresh niche and a fresh file:// tree.
    const dataDir = join(tmp, 'niche-data');
    const tree = join(tmp, 'file-tree');
    const niche = await startNiche({
      repo: REPO,
      dataDir,
      logFile: join(tmp, 'niche.log'),
      compiledMain: nicheMain,
      env: NICHE_ENV,
    });
    servers.push(niche);
    const token = await createPushToken(REPO, dataDir);
    const netrc = join(tmp, 'netrc');
    writeFileSync(netrc, `machine 127.0.0.1 login niche password ${token}\n`, { mode: 0o600 });
    const pushEnv = nixEnv(home, [`netrc-file = ${netrc}`]);
    const smallSet = [...corpus.small, corpus.top];
    t = performance.now();
    await run('sh', ['-c', 'find "$@" -type f -exec cat {} + > /dev/null', 'sh', ...smallSet, ...bulk]);
    log(`  read the corpus into the page cache in ${elapsed(t)}`);

    const push = async (
      paths: readonly string[],
      compression: string,
      nicheFirst: boolean,
    ): Promise<PushTimes> => {
      const toFile = (): Promise<Loaded<{ seconds: number }>> =>
        nixCopyTo(params, `file://${tree}?compression=${compression}`, paths, pushEnv);
      const toNiche = (): Promise<Loaded<{ seconds: number }>> =>
        nixCopyTo(params, `${niche.storeUrl}?compression=${compression}`, paths, pushEnv);
      const toNull = async (): Promise<Loaded<{ seconds: number }>> => {
        const server = await startNullServer();
        try {
          return await nixCopyTo(params, `${server.url}?compression=${compression}`, paths, pushEnv);
        } finally {
          await server.close();
        }
      };
      let file: Loaded<{ seconds: number }>;
      let nicheTime: Loaded<{ seconds: number }>;
      if (nicheFirst) {
        nicheTime = await toNiche();
        file = await toFile();
      } else {
        file = await toFile();
        nicheTime = await toNiche();
      }
      const nullHttp = await toNull();
      log(
        `  nix copy --to, ${paths.length} paths (${compression}): niche ${nicheTime.seconds.toFixed(2)} s, ` +
          `file:// ${file.seconds.toFixed(2)} s, a server storing nothing ${nullHttp.seconds.toFixed(2)} s ` +
          `(other CPU ${nicheTime.otherCores.toFixed(2)} / ${file.otherCores.toFixed(2)})`,
      );
      return { paths: paths.length, compression, niche: nicheTime, file, nullHttp };
    };
    log('pushing with nix copy --to (niche, file://)');
    const pushSmall = await push(smallSet, params.compression, false);
    const pushBulk = bulk.length > 0 ? await push(bulk, params.bulkCompression, true) : undefined;

    // 3. nginx over the tree.
    const nginx = await startNginx({ root: tree, dir: join(tmp, 'nginx') });
    servers.push(nginx);
    const pair: Pair<RunningServer> = { niche, nginx };

    // 4. wrk.
    const allHashes = [...smallSet, ...bulk].map(hashPart);
    const missing = randomHashes(allHashes.length, params.seed);
    const hits = pathsFiles(tmp, 'hits', pair, (server) =>
      allHashes.map((hash) => `${server.prefix}/${hash}.narinfo`),
    );
    const misses = pathsFiles(tmp, 'misses', pair, (server) =>
      missing.map((hash) => `${server.prefix}/${hash}.narinfo`),
    );
    const c = params.connections;
    log(`narinfo: wrk, ${params.durationS} s per run after ${params.warmupS} s of warm-up`);
    const hitC1 = await wrkScenario(
      params,
      pair,
      { label: 'hit c=1', paths: hits, connections: 1, expect: 'ok', rank: 'requests' },
      true,
    );
    const hitCN = await wrkScenario(
      params,
      pair,
      { label: `hit c=${c}`, paths: hits, connections: c, expect: 'ok', rank: 'requests' },
      false,
    );
    const missC1 = await wrkScenario(
      params,
      pair,
      { label: 'miss c=1', paths: misses, connections: 1, expect: 'error', rank: 'requests' },
      true,
    );
    const missCN = await wrkScenario(
      params,
      pair,
      { label: `miss c=${c}`, paths: misses, connections: c, expect: 'error', rank: 'requests' },
      false,
    );
    log('small NAR downloads (the closure copy fetches hundreds): wrk');
    const smallNars = await narPaths(pair, corpus.small, tmp, 'small-nars');
    const smallNarC1 = await wrkScenario(
      params,
      pair,
      { label: 'small NAR c=1', paths: smallNars, connections: 1, expect: 'ok', rank: 'requests' },
      true,
    );
    let nar: Results['nar'];
    if (bulk.length > 0) {
      log('NAR downloads: wrk');
      const nars = await narPaths(pair, bulk, tmp, 'nars');
      const base = { paths: nars, expect: 'ok', timeoutSeconds: 300, rank: 'bytes' } as const;
      const c1 = await wrkScenario(params, pair, { ...base, label: 'NAR c=1', connections: 1 }, false);
      const cN = await wrkScenario(
        params,
        pair,
        { ...base, label: `NAR c=${params.narConnections}`, connections: params.narConnections },
        true,
      );
      nar = { connections: params.narConnections, c1, cN };
    }

    // 5. Closure copy.
    log(
      `nix copy --from of the ${corpus.closure.length + 1}-path closure (hyperfine, ${params.closureRuns} runs)`,
    );
    const closure = await both(pair, true, async (server) => {
      const stats = await closureCopy(params, server, corpus, tmp, home);
      log(
        `  ${server.name}: median ${stats.median.toFixed(2)} s (min ${stats.min.toFixed(2)}, max ${stats.max.toFixed(2)})`,
      );
      return stats;
    });

    // 6. Peak RSS around a huge NAR.
    let huge: HugeResult | undefined;
    if (params.hugeGb > 0) {
      log(`peak RSS: ${params.hugeGb} GiB NAR up and down`);
      await quiet(params);
      huge = await hugeNarRoundTrip({
        pid: niche.pid,
        origin: niche.origin,
        token,
        file: join(tmp, 'huge-file'),
        bytes: Math.round(params.hugeGb * 2 ** 30),
      });
      const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
      log(
        `  upload ${huge.upload.megabytesPerSecond.toFixed(0)} MB/s, peak ${mib(huge.upload.peakRss)}; ` +
          `download ${huge.download.megabytesPerSecond.toFixed(0)} MB/s, peak ${mib(huge.download.peakRss)} ` +
          `(before: ${mib(huge.rssBefore)})`,
      );
      rmSync(join(tmp, 'huge-file'), { force: true });
    }

    await nginx.stop();
    await niche.stop();
    servers.length = 0;

    // 7. The local store (issue 5): niche making NARs on the fly from /nix/store and signing narinfos per
    // request, against nginx serving the same paths as an uncompressed `nix copy --to file://` tree.
    let localStore: Results['localStore'];
    if (params.localStore) {
      log('local store: niche --local-store against nginx on a --to file://?compression=none tree');
      const plainTree = join(tmp, 'plain-tree');
      const localPaths = [...smallSet, ...bulk];
      t = performance.now();
      await nixCopyTo(params, `file://${plainTree}?compression=none`, localPaths, pushEnv);
      log(`  wrote the uncompressed tree of ${localPaths.length} paths in ${elapsed(t)}`);
      const localNiche = await startNiche({
        repo: REPO,
        dataDir: join(tmp, 'niche-local-data'),
        logFile: join(tmp, 'niche-local.log'),
        compiledMain: nicheMain,
        env: NICHE_ENV,
        localStore: true,
      });
      servers.push(localNiche);
      const plainNginx = await startNginx({ root: plainTree, dir: join(tmp, 'nginx-plain') });
      servers.push(plainNginx);
      const localPair: Pair<RunningServer> = {
        niche: { ...localNiche, storeUrl: `${localNiche.origin}/local`, prefix: '/local' },
        nginx: plainNginx,
      };
      const localHits = pathsFiles(tmp, 'local-hits', localPair, (server) =>
        localPaths.map((path) => `${server.prefix}/${hashPart(path)}.narinfo`),
      );
      const hitScenario = { paths: localHits, expect: 'ok', rank: 'requests' } as const;
      const localHitC1 = await wrkScenario(
        params,
        localPair,
        { ...hitScenario, label: 'local store hit c=1', connections: 1 },
        true,
      );
      const localHitCN = await wrkScenario(
        params,
        localPair,
        { ...hitScenario, label: `local store hit c=${c}`, connections: c },
        false,
      );
      let narC1: WrkPair | undefined;
      if (bulk.length > 0) {
        const localNars = await narPaths(localPair, bulk, tmp, 'local-nars');
        narC1 = await wrkScenario(
          params,
          localPair,
          {
            label: 'local store NAR c=1',
            paths: localNars,
            connections: 1,
            expect: 'ok',
            timeoutSeconds: 300,
            rank: 'bytes',
          },
          true,
        );
      }
      localStore = { hitC1: localHitC1, hitCN: localHitCN, narC1 };
      await plainNginx.stop();
      await localNiche.stop();
      servers.length = 0;
      rmSync(plainTree, { recursive: true, force: true });
    }

    // 8. Optional CPU profile of niche under the narinfo c=N load.
    let profile: ProfileSummary | undefined;
    if (params.cpuProf) {
      log(`CPU profile: niche under --cpu-prof, narinfo hits c=${c}`);
      profile = await profileNarinfo(params, nicheMain, dataDir, tmp, hits.niche);
      log(`  ${profile.file}`);
    }

    const results: Results = {
      date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
      machine: host,
      params: values,
      corpus: {
        small: corpus.small.length,
        medium: corpus.medium.length,
        large: corpus.large.length,
        closure: corpus.closure.length,
        contentBytes: corpus.bytes.small + corpus.bytes.medium + corpus.bytes.large,
        buildSeconds,
      },
      push: { small: pushSmall, bulk: pushBulk },
      narinfo: { connections: c, hitC1, hitCN, missC1, missCN },
      smallNar: smallNarC1,
      nar,
      closure,
      huge,
      localStore,
      profile,
      totalSeconds: (performance.now() - started) / 1000,
    };
    const rows = buildRows(results);
    await writeReports(results, rows, {
      json: [join(OUT, 'results.json'), join(REPO, 'docs', 'benchmarks.json')],
      markdown: join(REPO, 'docs', 'benchmarks.md'),
    });
    process.stdout.write(`\n${consoleTable(rows)}\n\n`);
    if (profile !== undefined) {
      process.stdout.write(`niche self time under narinfo c=${c} (${profile.file}):\n`);
      for (const entry of profile.top) {
        process.stdout.write(
          `  ${entry.percent.toFixed(1).padStart(5)} %  ${entry.function}  ${entry.location}\n`,
        );
      }
      process.stdout.write('\n');
    }
    log(`wrote bench/out/results.json, docs/benchmarks.json, docs/benchmarks.md in ${elapsed(started)}`);
  } finally {
    for (const server of servers) await server.stop();
    killAll();
    if (params.keepTmp) log(`kept ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

try {
  await main();
} catch (error) {
  if (error instanceof ParamError) {
    process.stderr.write(`bench: ${error.message}\n`);
    process.exitCode = 64;
  } else {
    process.stderr.write(
      `bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exitCode = 1;
  }
}
