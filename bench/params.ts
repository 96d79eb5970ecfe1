// The benchmark's parameters: every BENCH_* environment variable, its default and meaning, defined once
// so that parsing, the console summary and docs/benchmarks.md cannot disagree.

export type Compression = 'xz' | 'zstd' | 'none';

export interface BenchParams {
  readonly smallCount: number;
  readonly smallMinKb: number;
  readonly smallMaxKb: number;
  readonly mediumMb: readonly number[];
  readonly largeMb: number;
  readonly closureSize: number;
  readonly compression: Compression;
  readonly bulkCompression: Compression;
  readonly durationS: number;
  readonly warmupS: number;
  readonly connections: number;
  readonly narConnections: number;
  readonly wrkThreads: number;
  readonly rounds: number;
  readonly pinC1: boolean;
  readonly closureRuns: number;
  readonly hugeGb: number;
  readonly localStore: boolean;
  readonly seed: number;
  readonly quietWaitS: number;
  readonly cpuProf: boolean;
  readonly keepTmp: boolean;
}

export interface ParamSpec {
  readonly env: string;
  readonly default: string;
  readonly description: string;
}

export const PARAM_SPECS: readonly ParamSpec[] = [
  { env: 'BENCH_SMALL_COUNT', default: '2000', description: 'number of small store paths' },
  { env: 'BENCH_SMALL_MIN_KB', default: '1', description: 'smallest small path (KiB, log-uniform sizes)' },
  { env: 'BENCH_SMALL_MAX_KB', default: '50', description: 'largest small path (KiB)' },
  {
    env: 'BENCH_MEDIUM_MB',
    default: '10,40,100',
    description: 'sizes of the medium paths in MiB, comma-separated (empty: none)',
  },
  { env: 'BENCH_LARGE_MB', default: '1024', description: 'size of the large path in MiB (0: none)' },
  {
    env: 'BENCH_CLOSURE_SIZE',
    default: '200',
    description: 'small paths referenced by the top-level path used for the closure copy',
  },
  {
    env: 'BENCH_COMPRESSION',
    default: 'xz',
    description: 'NAR compression for the small paths and the closure (xz, zstd, none)',
  },
  {
    env: 'BENCH_BULK_COMPRESSION',
    default: 'zstd',
    description: 'NAR compression for the medium and large paths (xz compresses ~1.5 MB/s here)',
  },
  { env: 'BENCH_DURATION_S', default: '10', description: 'seconds per measured wrk run' },
  { env: 'BENCH_WARMUP_S', default: '2', description: 'seconds of unmeasured wrk load before each run' },
  { env: 'BENCH_CONNECTIONS', default: '64', description: 'connections for the concurrent narinfo runs' },
  { env: 'BENCH_NAR_CONNECTIONS', default: '8', description: 'connections for the concurrent NAR run' },
  { env: 'BENCH_WRK_THREADS', default: '1', description: 'wrk threads (the server gets the other core)' },
  {
    env: 'BENCH_ROUNDS',
    default: '2',
    description: 'rounds of each wrk scenario per server, alternating; the best round is reported',
  },
  {
    env: 'BENCH_PIN_C1',
    default: '1',
    description:
      '1: c=1 runs put wrk and the server on one CPU (cross-CPU wake-ups of a VM otherwise dominate)',
  },
  { env: 'BENCH_CLOSURE_RUNS', default: '3', description: 'runs of each closure copy (hyperfine)' },
  {
    env: 'BENCH_LOCAL_STORE',
    default: '1',
    description:
      '1: also measure `niche serve --local-store` against nginx on a `--to file://?compression=none` tree',
  },
  {
    env: 'BENCH_HUGE_GB',
    default: '4',
    description: 'size of the NAR uploaded and downloaded for the peak-RSS check in GiB (0: skip)',
  },
  {
    env: 'BENCH_QUIET_WAIT_S',
    default: '30',
    description: 'before each measurement, wait up to this long for other processes to use < 0.25 cores',
  },
  { env: 'BENCH_SEED', default: '1', description: 'seed for the corpus sizes and the missing hashes' },
  {
    env: 'BENCH_CPU_PROF',
    default: '0',
    description: '1: profile niche (node --cpu-prof) during an extra narinfo run, into bench/out',
  },
  { env: 'BENCH_KEEP_TMP', default: '0', description: '1: keep the temporary directory (logs, trees)' },
];

const COMPRESSIONS: readonly Compression[] = ['xz', 'zstd', 'none'];

export class ParamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ParamError';
  }
}

function raw(env: NodeJS.ProcessEnv, name: string): string {
  const spec = PARAM_SPECS.find((s) => s.env === name);
  if (spec === undefined) throw new Error(`unknown parameter ${name}`);
  return (env[name] ?? spec.default).trim();
}

function number(env: NodeJS.ProcessEnv, name: string, min: number, integer = true): number {
  const text = raw(env, name);
  const value = Number(text);
  if (text === '' || !Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new ParamError(
      `${name}=${JSON.stringify(text)}: expected ${integer ? 'an integer' : 'a number'} ≥ ${min}`,
    );
  }
  return value;
}

function compression(env: NodeJS.ProcessEnv, name: string): Compression {
  const text = raw(env, name);
  const found = COMPRESSIONS.find((c) => c === text);
  if (found === undefined)
    throw new ParamError(`${name}=${JSON.stringify(text)}: expected ${COMPRESSIONS.join(', ')}`);
  return found;
}

function flag(env: NodeJS.ProcessEnv, name: string): boolean {
  const text = raw(env, name);
  if (text === '1' || text === 'true') return true;
  if (text === '0' || text === 'false' || text === '') return false;
  throw new ParamError(`${name}=${JSON.stringify(text)}: expected 0 or 1`);
}

/** Reads and checks every BENCH_* variable; unknown BENCH_* names are refused (likely typos). */
export function parseParams(env: NodeJS.ProcessEnv): BenchParams {
  const unknown = Object.keys(env).filter(
    (key) => key.startsWith('BENCH_') && !PARAM_SPECS.some((s) => s.env === key),
  );
  if (unknown.length > 0) throw new ParamError(`unknown parameter(s): ${unknown.join(', ')}`);
  const mediumText = raw(env, 'BENCH_MEDIUM_MB');
  const mediumMb =
    mediumText === ''
      ? []
      : mediumText.split(',').map((part) => {
          const value = Number(part.trim());
          if (!Number.isInteger(value) || value < 1) {
            throw new ParamError(`BENCH_MEDIUM_MB=${JSON.stringify(mediumText)}: expected integers ≥ 1`);
          }
          return value;
        });
  const params: BenchParams = {
    smallCount: number(env, 'BENCH_SMALL_COUNT', 1),
    smallMinKb: number(env, 'BENCH_SMALL_MIN_KB', 1),
    smallMaxKb: number(env, 'BENCH_SMALL_MAX_KB', 1),
    mediumMb,
    largeMb: number(env, 'BENCH_LARGE_MB', 0),
    closureSize: number(env, 'BENCH_CLOSURE_SIZE', 1),
    compression: compression(env, 'BENCH_COMPRESSION'),
    bulkCompression: compression(env, 'BENCH_BULK_COMPRESSION'),
    durationS: number(env, 'BENCH_DURATION_S', 1),
    warmupS: number(env, 'BENCH_WARMUP_S', 0),
    connections: number(env, 'BENCH_CONNECTIONS', 1),
    narConnections: number(env, 'BENCH_NAR_CONNECTIONS', 1),
    wrkThreads: number(env, 'BENCH_WRK_THREADS', 1),
    rounds: number(env, 'BENCH_ROUNDS', 1),
    pinC1: flag(env, 'BENCH_PIN_C1'),
    closureRuns: number(env, 'BENCH_CLOSURE_RUNS', 1),
    hugeGb: number(env, 'BENCH_HUGE_GB', 0, false),
    localStore: flag(env, 'BENCH_LOCAL_STORE'),
    seed: number(env, 'BENCH_SEED', 0),
    quietWaitS: number(env, 'BENCH_QUIET_WAIT_S', 0),
    cpuProf: flag(env, 'BENCH_CPU_PROF'),
    keepTmp: flag(env, 'BENCH_KEEP_TMP'),
  };
  if (params.smallMaxKb < params.smallMinKb) throw new ParamError('BENCH_SMALL_MAX_KB < BENCH_SMALL_MIN_KB');
  if (params.closureSize > params.smallCount) throw new ParamError('BENCH_CLOSURE_SIZE > BENCH_SMALL_COUNT');
  return params;
}

/** The value each parameter had in this run, as text (for the report). */
export function paramValues(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(PARAM_SPECS.map((spec) => [spec.env, raw(env, spec.env)]));
}
