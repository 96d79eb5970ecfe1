// Turns the measurements into the comparison table (niche, nginx, niche/nginx, target, pass/fail) and
// writes it three ways: the console, bench/out/results.json (+ docs/benchmarks.json), and
// docs/benchmarks.md, formatted with the repository's prettier settings so `npm run lint` stays clean.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import * as prettier from 'prettier';
import type { ProfileSummary } from './cpu-profile.js';
import { PARAM_SPECS } from './params.js';
import type { WrkResult } from './wrk.js';

export interface Pair<T> {
  readonly niche: T;
  readonly nginx: T;
}

/** A measurement with the CPU other processes used meanwhile (bench/load.ts), in cores. */
export type Loaded<T> = T & { readonly otherCores: number };

/** hyperfine's statistics for one command, in seconds. */
export interface TimingStats {
  readonly mean: number;
  readonly median: number;
  readonly stddev: number;
  readonly min: number;
  readonly max: number;
  readonly runs: number;
}

export interface PushTimes {
  readonly paths: number;
  readonly compression: string;
  /** Seconds for `nix copy --to` niche and `--to file://`. */
  readonly niche: Loaded<{ seconds: number }>;
  readonly file: Loaded<{ seconds: number }>;
  /** `--to` an HTTP server that stores nothing (bench/null-server.ts): the floor of Nix's HTTP store. */
  readonly nullHttp: Loaded<{ seconds: number }>;
}

export interface PhasePeak {
  readonly seconds: number;
  readonly megabytesPerSecond: number;
  /** Highest resident set size of the niche process during the phase, bytes. */
  readonly peakRss: number;
}

export interface HugeResult {
  readonly narBytes: number;
  readonly rssBefore: number;
  readonly upload: Loaded<PhasePeak>;
  readonly download: Loaded<PhasePeak>;
  /** How the peak was read: VmHWM after resetting it, or VmRSS polling only. */
  readonly method: string;
}

export interface Machine {
  readonly cpus: number;
  readonly cpuModel: string;
  readonly memoryBytes: number;
  readonly kernel: string;
  /** The cpuidle driver (`haltpoll` on a KVM guest). */
  readonly cpuidle: string;
  readonly node: string;
  readonly nginx: string;
  readonly wrk: string;
  readonly nix: string;
  readonly hyperfine: string;
}

/** A wrk run with the CPU time the server's processes used during it. */
export type ServedResult = Loaded<WrkResult> & { readonly serverCpuSeconds: number };

/** One wrk round, kept for the JSON. */
export interface RoundSummary {
  readonly requestsPerSecond: number;
  readonly megabytesPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly serverCpuSeconds: number;
  readonly otherCores: number;
}

/** The best round of each server, with every round. */
export type WrkPair = Pair<ServedResult & { readonly rounds: readonly RoundSummary[] }>;

export interface Results {
  readonly date: string;
  readonly machine: Machine;
  readonly params: Record<string, string>;
  readonly corpus: {
    readonly small: number;
    readonly medium: number;
    readonly large: number;
    readonly closure: number;
    readonly contentBytes: number;
    readonly buildSeconds: number;
  };
  readonly push: { readonly small: PushTimes; readonly bulk: PushTimes | undefined };
  readonly narinfo: {
    readonly connections: number;
    readonly hitC1: WrkPair;
    readonly hitCN: WrkPair;
    readonly missC1: WrkPair;
    readonly missCN: WrkPair;
  };
  /** Small (1-50 KiB) NARs at c=1. */
  readonly smallNar: WrkPair;
  readonly nar: { readonly connections: number; readonly c1: WrkPair; readonly cN: WrkPair } | undefined;
  readonly closure: Pair<Loaded<TimingStats>>;
  readonly huge: HugeResult | undefined;
  /** `niche serve --local-store` against nginx on an uncompressed tree of the same paths. */
  readonly localStore:
    { readonly hitC1: WrkPair; readonly hitCN: WrkPair; readonly narC1: WrkPair | undefined } | undefined;
  readonly profile: ProfileSummary | undefined;
  readonly totalSeconds: number;
}

export interface Target {
  /** The ratio niche/nginx must be at least (`min`) or at most (`max`) `value`. */
  readonly kind: 'min' | 'max';
  readonly value: number;
}

export interface Row {
  readonly metric: string;
  readonly niche: string;
  readonly nginx: string;
  /** niche ÷ nginx, when both are numbers. */
  readonly ratio: number | undefined;
  readonly better: 'higher' | 'lower';
  readonly target: string;
  readonly pass: boolean | undefined;
  /** Cores other processes used during the niche and the nginx measurement. */
  readonly otherCores: Pair<number> | { readonly niche: number; readonly nginx: undefined };
}

const MIB = 2 ** 20;

function fmt(value: number, digits: number): string {
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ms(value: number): string {
  return `${fmt(value, value < 10 ? 2 : 1)} ms`;
}

const rps = (value: number): string => `${fmt(value, 0)}/s`;
const mbps = (value: number): string => `${fmt(value, 0)} MB/s`;
const sec = (value: number): string => `${fmt(value, 2)} s`;

function row<T extends { readonly otherCores: number }>(
  metric: string,
  pair: Pair<T>,
  value: (measurement: T) => number,
  show: (value: number) => string,
  better: 'higher' | 'lower',
  target?: Target,
): Row {
  const niche = value(pair.niche);
  const nginx = value(pair.nginx);
  const ratio = nginx > 0 ? niche / nginx : undefined;
  const pass =
    target === undefined || ratio === undefined
      ? undefined
      : target.kind === 'min'
        ? ratio >= target.value
        : ratio <= target.value;
  const targetText = target === undefined ? '' : `${target.kind === 'min' ? '≥' : '≤'} ${target.value}×`;
  return {
    metric,
    niche: show(niche),
    nginx: show(nginx),
    ratio,
    better,
    target: targetText,
    pass,
    otherCores: { niche: pair.niche.otherCores, nginx: pair.nginx.otherCores },
  };
}

/** The three rows of a narinfo wrk run: req/s, median and p99 latency. */
function narinfoRows(
  label: string,
  pair: WrkPair,
  targets: { rps?: Target; p50?: Target; p99?: Target } = {},
): Row[] {
  return [
    row(`${label}, req/s`, pair, (r) => r.requestsPerSecond, rps, 'higher', targets.rps),
    row(`${label}, median latency`, pair, (r) => r.latencyMs.p50, ms, 'lower', targets.p50),
    row(`${label}, p99 latency`, pair, (r) => r.latencyMs.p99, ms, 'lower', targets.p99),
  ];
}

// Targets: issue 1's (the first comparison with nginx), raised or added by issue 15 (performance at scale):
// hits at c=64 ≥ 0.8×, misses at c=64 ≥ 0.7×, p99 at c=1 ≤ 2× (hits, misses, local store), small NAR
// downloads ≥ 0.7×, and `nix copy --to` within 1.3× (small paths) and 1.15× (large) of the null server.
const P99_C1: Target = { kind: 'max', value: 2 };

/** Server CPU time per request, in µs. */
const cpuPerRequest = (r: ServedResult): number =>
  r.requests > 0 ? (r.serverCpuSeconds / r.requests) * 1e6 : 0;
const us = (value: number): string => `${fmt(value, 0)} µs`;

export function buildRows(results: Results): Row[] {
  const n = results.narinfo;
  const c = n.connections;
  const rows: Row[] = [
    ...narinfoRows('narinfo hit, c=1', n.hitC1, { p50: { kind: 'max', value: 1.2 }, p99: P99_C1 }),
    ...narinfoRows(`narinfo hit, c=${c}`, n.hitCN, { rps: { kind: 'min', value: 0.8 } }),
    row(`narinfo hit, c=${c}, server CPU per request`, n.hitCN, cpuPerRequest, us, 'lower'),
    ...narinfoRows('narinfo miss (404), c=1', n.missC1, { p99: P99_C1 }),
    ...narinfoRows(`narinfo miss (404), c=${c}`, n.missCN, { rps: { kind: 'min', value: 0.7 } }),
    row(`narinfo miss (404), c=${c}, server CPU per request`, n.missCN, cpuPerRequest, us, 'lower'),
  ];
  rows.push(
    row('small NAR download, c=1, req/s', results.smallNar, (r) => r.requestsPerSecond, rps, 'higher', {
      kind: 'min',
      value: 0.7,
    }),
    row('small NAR download, c=1, median latency', results.smallNar, (r) => r.latencyMs.p50, ms, 'lower'),
    row('small NAR download, c=1, server CPU per request', results.smallNar, cpuPerRequest, us, 'lower'),
  );
  if (results.nar !== undefined) {
    const nar = results.nar;
    rows.push(
      row('medium/large NAR download, c=1', nar.c1, (r) => r.megabytesPerSecond, mbps, 'higher', {
        kind: 'min',
        value: 0.9,
      }),
      row(
        'medium/large NAR download, c=1, server CPU per GB',
        nar.c1,
        (r) => (r.bytes > 0 ? (r.serverCpuSeconds / r.bytes) * 1e9 : 0),
        sec,
        'lower',
      ),
      row(
        `medium/large NAR download, c=${nar.connections}`,
        nar.cN,
        (r) => r.megabytesPerSecond,
        mbps,
        'higher',
      ),
    );
  }
  rows.push(
    row(
      `nix copy --from, ${results.corpus.closure + 1}-path closure (median)`,
      results.closure,
      (t) => t.median,
      sec,
      'lower',
      { kind: 'max', value: 1.05 },
    ),
  );
  const pushRow = (push: PushTimes, what: string): Row =>
    row(
      `nix copy --to, ${push.paths} ${what} (${push.compression}); nginx column: --to file://`,
      { niche: push.niche, nginx: push.file },
      (t) => t.seconds,
      sec,
      'lower',
      { kind: 'max', value: 1.1 },
    );
  const floorRow = (push: PushTimes, what: string): Row =>
    row(
      `nix copy --to, ${push.paths} ${what} (${push.compression}), to an HTTP server that stores nothing; nginx column: --to file://`,
      { niche: push.nullHttp, nginx: push.file },
      (t) => t.seconds,
      sec,
      'lower',
    );
  // niche against the floor: what Nix's HTTP store costs with a server that does nothing.
  const overFloorRow = (push: PushTimes, what: string, limit: number): Row =>
    row(
      `nix copy --to, ${push.paths} ${what} (${push.compression}); nginx column: the HTTP server that stores nothing`,
      { niche: push.niche, nginx: push.nullHttp },
      (t) => t.seconds,
      sec,
      'lower',
      { kind: 'max', value: limit },
    );
  rows.push(
    pushRow(results.push.small, 'small paths + top'),
    floorRow(results.push.small, 'small paths + top'),
    overFloorRow(results.push.small, 'small paths + top', 1.3),
  );
  if (results.push.bulk !== undefined) {
    rows.push(
      pushRow(results.push.bulk, 'medium/large paths'),
      floorRow(results.push.bulk, 'medium/large paths'),
      overFloorRow(results.push.bulk, 'medium/large paths', 1.15),
    );
  }
  const local = results.localStore;
  if (local !== undefined) {
    rows.push(
      ...narinfoRows('local store: narinfo hit, c=1', local.hitC1, { p99: P99_C1 }),
      ...narinfoRows(`local store: narinfo hit, c=${c}`, local.hitCN, { rps: { kind: 'min', value: 0.6 } }),
    );
    if (local.narC1 !== undefined) {
      rows.push(
        row(
          'local store: NAR made on the fly, c=1; nginx: the same NAR as a file',
          local.narC1,
          (r) => r.megabytesPerSecond,
          mbps,
          'higher',
          { kind: 'min', value: 0.5 },
        ),
        row(
          'local store: NAR made on the fly, c=1, server CPU per GB',
          local.narC1,
          (r) => (r.bytes > 0 ? (r.serverCpuSeconds / r.bytes) * 1e9 : 0),
          sec,
          'lower',
        ),
      );
    }
  }
  const huge = results.huge;
  if (huge !== undefined) {
    const gib = fmt(huge.narBytes / 2 ** 30, 1);
    for (const [phase, peak] of [
      ['upload', huge.upload],
      ['download', huge.download],
    ] as const) {
      rows.push({
        metric: `niche peak RSS, ${gib} GiB NAR ${phase} (${fmt(peak.megabytesPerSecond, 0)} MB/s)`,
        niche: `${fmt(peak.peakRss / MIB, 0)} MiB`,
        nginx: 'n/a',
        ratio: undefined,
        better: 'lower',
        target: '≤ 200 MiB',
        pass: peak.peakRss <= 200 * MIB,
        otherCores: { niche: peak.otherCores, nginx: undefined },
      });
    }
  }
  return rows;
}

function ratioText(r: Row): string {
  return r.ratio === undefined ? '' : `${fmt(r.ratio, 2)}×`;
}

function passText(r: Row): string {
  return r.pass === undefined ? '' : r.pass ? 'pass' : 'FAIL';
}

function loadText(r: Row): string {
  const { niche, nginx } = r.otherCores;
  return nginx === undefined ? fmt(niche, 2) : `${fmt(niche, 2)} / ${fmt(nginx, 2)}`;
}

const HEADER = ['metric', 'niche', 'nginx', 'niche/nginx', 'target', '', 'other CPU'] as const;

function cells(r: Row): string[] {
  return [r.metric, r.niche, r.nginx, ratioText(r), r.target, passText(r), loadText(r)];
}

export function consoleTable(rows: readonly Row[]): string {
  const header = HEADER;
  const lines = rows.map(cells);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const format = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ');
  return [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.map(format)].join('\n');
}

function markdownTable(header: readonly string[], lines: readonly (readonly string[])[]): string {
  const escape = (cell: string): string => cell.replaceAll('|', '\\|');
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...lines.map((l) => `| ${l.map(escape).join(' | ')} |`),
  ].join('\n');
}

function markdown(results: Results, rows: readonly Row[]): string {
  const m = results.machine;
  const passed = rows.filter((r) => r.pass === true).length;
  const judged = rows.filter((r) => r.pass !== undefined).length;
  const corpus = results.corpus;
  const parts: string[] = [
    '# Benchmarks: niche against nginx serving the same cache',
    '',
    '<!-- Generated by `npm run bench` (bench/run.ts); edits are overwritten. Raw numbers: docs/benchmarks.json. -->',
    '',
    `niche (one Node.js process, SQLite + files) against nginx serving the static tree that \`nix copy --to file://\` wrote from the same store paths, on loopback. Run of ${results.date}, ${passed} of ${judged} targets met; the whole run took ${fmt(results.totalSeconds / 60, 1)} min.`,
    '',
    'Compression bombs against niche while other clients download (peak RSS, event-loop delay, the others’ narinfo latency): [bench-bombs.md](bench-bombs.md), from `npm run bench:bombs`.',
    '',
    'What Prometheus metrics cost narinfo hits (metrics on against off, same run): [bench-metrics.md](bench-metrics.md), from `npm run bench:metrics`.',
    '',
    '## Results',
    '',
    'Ratios are niche ÷ nginx; for rates higher is better, for latencies, times and memory lower is better. Targets are from the issues: the first comparison with nginx, and issue 15 (performance at scale), which raised some and added the p99, small-download and push-over-the-floor targets. *Server CPU* is the user + system time of the server’s processes (nginx: master and worker) during the measured run. *Other CPU* is how many cores processes outside the benchmark used during the niche / nginx measurement (this machine is shared; above about 0.25 the numbers are disturbed).',
    '',
    markdownTable(HEADER, rows.map(cells)),
    '',
    '## Machine',
    '',
    markdownTable(
      ['', ''],
      [
        ['CPU', `${m.cpus} × ${m.cpuModel}`],
        ['RAM', `${fmt(m.memoryBytes / 2 ** 30, 1)} GiB`],
        ['kernel', m.kernel],
        ['cpuidle driver', m.cpuidle],
        ['Node.js', m.node],
        ['nginx', m.nginx],
        ['wrk', m.wrk],
        ['Nix', m.nix],
        ['hyperfine', m.hyperfine],
        ['date', results.date],
      ],
    ),
    '',
    '## Parameters',
    '',
    'Environment variables read by `npm run bench`, with the values of this run:',
    '',
    markdownTable(
      ['variable', 'default', 'this run', 'meaning'],
      PARAM_SPECS.map((spec) => [
        `\`${spec.env}\``,
        spec.default === '' ? '' : `\`${spec.default}\``,
        results.params[spec.env] === undefined || results.params[spec.env] === ''
          ? ''
          : `\`${results.params[spec.env] ?? ''}\``,
        spec.description,
      ]),
    ),
    '',
    `Corpus: ${corpus.small} small paths, ${corpus.medium} medium, ${corpus.large} large, and a top-level path referencing ${corpus.closure} of the small ones; ${fmt(corpus.contentBytes / MIB, 0)} MiB of file contents (built or found in /nix/store in ${fmt(corpus.buildSeconds, 1)} s).`,
    '',
    '## Method',
    '',
    '- **Corpus.** Store paths built by Nix from a generated expression without nixpkgs (`bench/corpus.ts`): small paths of 1-50 KiB (log-uniform), medium paths of 10-100 MiB and one of 1 GiB, each 40-80 % `/dev/urandom` and the rest log-like text. The derivations depend only on the parameters, so later runs reuse the paths; an index path in `bench/out/corpus-gcroot` is their GC root.',
    '- **Push.** Both targets start empty: a fresh niche data directory and a fresh directory for `nix copy --to file://`. The small paths and the closure are pushed with `BENCH_COMPRESSION`, the medium and large ones in a second `nix copy` with `BENCH_BULK_COMPRESSION` (xz runs at about 1.5 MB/s on this machine, which would make pushing the 1 GiB path twice take half an hour). Nix 2.8 uploads one path at a time. The file contents are read once beforehand so both pushes start with a warm page cache.',
    '- **Servers.** `niche serve --log-level warn` as its own process (from a tsc build, as deployed), its access log off (`NICHE_ACCESS_LOG=off`) like nginx’s; nginx 1 worker, `sendfile on`, `tcp_nopush on`, `access_log off`, `keepalive_requests` raised to match niche’s unlimited keep-alive, rooted at the file:// tree. Every narinfo and NAR each server serves is the one it was given in the push.',
    '- **Load.** wrk with `bench/paths.lua`, which cycles through a list of request paths, so every narinfo request asks for a different file: hits over every path of the corpus, misses over random valid-looking hashes (all must be 404, hits all 2xx, or the run is refused). NAR runs download the small NARs (one each, like a closure copy) or the medium and large NARs in turn. Each scenario runs `BENCH_ROUNDS` times per server, niche and nginx alternating, after one unmeasured warm-up of `BENCH_WARMUP_S`; the table shows each server’s best round (by req/s, or MB/s for NARs) with that round’s latencies, and the JSON has every round. wrk and the server share the 2 cores (wrk has `BENCH_WRK_THREADS` threads). With `BENCH_PIN_C1=1` the c=1 narinfo and small-NAR runs put wrk and the server (all its threads) on the same CPU: this machine is a VM whose idle CPUs halt (cpuidle `haltpoll`), and the cross-CPU wake-up for every request then dominates a c=1 round trip (about 0.1 ms for both servers, and 3× less when unrelated load keeps the CPUs awake), so unpinned c=1 numbers measure the hypervisor more than the server. Latencies are wrk’s (closed loop, so at c=64 they mostly restate throughput).',
    '- **Background load.** The machine may be shared: before each measurement the harness waits (up to `BENCH_QUIET_WAIT_S`) until other processes use under 0.25 cores, and records what they used during it (machine-wide busy time from `/proc/stat` minus the CPU of the benchmark’s own process tree). Rows whose *other CPU* is high are disturbed, usually against whichever server ran then.',
    '- **Closure copy.** `nix copy --from <server> --to local?root=<empty dir> --no-check-sigs <top>` timed by hyperfine, the target and Nix’s cache directory removed before each run.',
    '- **Memory.** A NAR of `BENCH_HUGE_GB` GiB (one sparse file, compression none) is made with `src/nix/nar-writer.ts`, hashed, then streamed to `PUT /main/nar/<hash>.nar` and downloaded back; the niche process’s VmHWM is reset (`/proc/<pid>/clear_refs`) before each phase and read after it, and VmRSS is polled every 50 ms as a cross-check.',
  ];
  const profile = results.profile;
  if (profile !== undefined) {
    parts.push(
      '',
      '## CPU profile: narinfo hits at c=' + String(results.narinfo.connections),
      '',
      `\`BENCH_CPU_PROF=1\`: a separate niche process under \`node --cpu-prof\` during one more narinfo hit run (profiling slows it, so these numbers are not in the table). Self time, share of the ${fmt((profile.totalMs - profile.idleMs) / 1000, 1)} s of busy samples:`,
      '',
      markdownTable(
        ['function', 'location', 'self', 'share'],
        profile.top.map((entry) => [
          `\`${entry.function}\``,
          entry.location === '' ? '' : `\`${entry.location}\``,
          `${fmt(entry.selfMs, 0)} ms`,
          `${fmt(entry.percent, 1)} %`,
        ]),
      ),
    );
  }
  return parts.join('\n') + '\n';
}

async function formatted(file: string, text: string, parser: 'markdown' | 'json'): Promise<string> {
  const options = (await prettier.resolveConfig(file)) ?? {};
  return prettier.format(text, { ...options, parser, filepath: file });
}

export async function writeReports(
  results: Results,
  rows: readonly Row[],
  files: { readonly json: readonly string[]; readonly markdown: string },
): Promise<void> {
  const json = JSON.stringify({ ...results, rows }, null, 2) + '\n';
  for (const file of files.json) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, json);
  }
  mkdirSync(dirname(files.markdown), { recursive: true });
  writeFileSync(files.markdown, await formatted(files.markdown, markdown(results, rows), 'markdown'));
}
