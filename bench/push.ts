// `npm run bench:push`: pushing many small paths (issue 15), the case where niche's own cost per path
// shows. The small paths of the benchmark corpus (bench/corpus.ts, BENCH_SMALL_COUNT of them, 2000 by
// default, plus nothing else) are pushed, each run to a fresh target:
// - `nix copy --to` the null server (bench/null-server.ts: accepts everything, stores nothing): what
//   Nix's HTTP binary cache store costs by itself, the floor no server can go below;
// - `nix copy --to` niche (`niche serve`, fresh data directory, SQLite + files);
// - `niche push` to niche (fresh data directory), with PUSH_JOBS uploads in parallel.
// The three alternate, PUSH_ROUNDS rounds; the table has each one's median wall time, paths per second
// and niche's CPU per path (user + system of the server process), and the ratios against the null
// server. Nix uploads one path at a time (HEAD narinfo, HEAD NAR, PUT NAR, PUT narinfo), so with Nix
// every millisecond niche spends on an upload is a millisecond of the push.
// With PUSH_CPU_PROF=1 the niche server of the last `nix copy` round runs with --cpu-prof into
// bench/out/push-prof (open the .cpuprofile in Chrome's DevTools, or `node bench/cpu-profile.ts`).
//
// Parameters (environment variables): PUSH_ROUNDS=3, PUSH_COMPRESSION=xz (both clients), PUSH_JOBS=8,
// PUSH_CPU_PROF=0, and BENCH_SMALL_COUNT / BENCH_SMALL_MIN_KB / BENCH_SMALL_MAX_KB / BENCH_SEED as for
// `npm run bench` (the same paths, so the corpus is usually in /nix/store already).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCorpus, nixEnv } from './corpus.js';
import { cpuSecondsOf, waitForQuiet, withLoad } from './load.js';
import { startNullServer } from './null-server.js';
import { parseParams } from './params.js';
import { elapsed, log, run, runBench } from './proc.js';
import { buildNiche, createPushToken, startNiche, type RunningServer } from './servers.js';
import { envNumber, median } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');

const push = {
  rounds: envNumber('PUSH_ROUNDS', 3),
  compression: process.env.PUSH_COMPRESSION ?? 'xz',
  jobs: envNumber('PUSH_JOBS', 8),
  cpuProf: process.env.PUSH_CPU_PROF === '1',
};

type Target = 'null' | 'nix-copy' | 'niche-push';
const TARGETS: readonly Target[] = ['null', 'nix-copy', 'niche-push'];

interface Measured {
  readonly target: Target;
  readonly seconds: number;
  /** CPU seconds of the niche server during the push (undefined for the null server). */
  readonly serverCpuSeconds: number | undefined;
  readonly otherCores: number;
}

async function main(): Promise<void> {
  const started = performance.now();
  const params = parseParams({ ...process.env, BENCH_MEDIUM_MB: '', BENCH_LARGE_MB: '0' });
  mkdirSync(OUT, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'niche-bench-push-'));
  const home = join(tmp, 'home');
  mkdirSync(home, { recursive: true });
  try {
    log('building niche (tsc) and the corpus');
    const main = await buildNiche(REPO, join(OUT, 'build-push'));
    const corpus = await buildCorpus(params, {
      workDir: join(tmp, 'corpus'),
      gcRoot: join(OUT, 'push-corpus-gcroot'),
      env: nixEnv(home),
    });
    const paths = corpus.small;
    await run('sh', ['-c', 'find "$@" -type f -exec cat {} + > /dev/null', 'sh', ...paths]);
    log(`  ${paths.length} small paths [${elapsed(started)}]`);

    let fresh = 0;
    const startFresh = async (profile: boolean): Promise<{ server: RunningServer; token: string }> => {
      fresh += 1;
      const dataDir = join(tmp, `niche-${fresh}`);
      const server = await startNiche({
        repo: REPO,
        dataDir,
        logFile: join(tmp, `niche-${fresh}.log`),
        compiledMain: main,
        env: { ...process.env, NICHE_ACCESS_LOG: 'off', NICHE_GC_INTERVAL: 'off' },
        ...(profile ? { cpuProfDir: join(OUT, 'push-prof') } : {}),
      });
      return { server, token: await createPushToken(REPO, dataDir) };
    };

    const measure = async (target: Target, profile: boolean): Promise<Measured> => {
      await waitForQuiet({ maxOtherCores: 0.25, maxWaitS: 30 });
      if (target === 'null') {
        const server = await startNullServer();
        try {
          const env = nixEnv(home);
          const { value, otherCores } = await withLoad(() =>
            run('nix', ['copy', '--to', `${server.url}?compression=${push.compression}`, ...paths], { env }),
          );
          return { target, seconds: value.seconds, serverCpuSeconds: undefined, otherCores };
        } finally {
          await server.close();
        }
      }
      const { server, token } = await startFresh(profile);
      try {
        const cpuBefore = cpuSecondsOf(server.pids());
        const { value, otherCores } = await withLoad(() => {
          if (target === 'nix-copy') {
            const netrc = join(tmp, 'netrc');
            writeFileSync(netrc, `machine 127.0.0.1 login niche password ${token}\n`, { mode: 0o600 });
            const env = nixEnv(home, [`netrc-file = ${netrc}`]);
            return run(
              'nix',
              ['copy', '--to', `${server.storeUrl}?compression=${push.compression}`, ...paths],
              {
                env,
              },
            );
          }
          return run(
            process.execPath,
            [
              main,
              'push',
              server.storeUrl,
              '--jobs',
              String(push.jobs),
              '--compression',
              push.compression,
              ...paths,
            ],
            { env: { ...process.env, NICHE_TOKEN: token, HOME: home } },
          );
        });
        const serverCpuSeconds = cpuSecondsOf(server.pids()) - cpuBefore;
        return { target, seconds: value.seconds, serverCpuSeconds, otherCores };
      } finally {
        await server.stop();
      }
    };

    const runs: Measured[] = [];
    for (let round = 0; round < push.rounds; round++) {
      const order = round % 2 === 0 ? TARGETS : [...TARGETS].reverse();
      for (const target of order) {
        const profile = push.cpuProf && target === 'nix-copy' && round === push.rounds - 1;
        const result = await measure(target, profile);
        runs.push(result);
        log(
          `round ${round + 1}: ${target}: ${result.seconds.toFixed(2)} s` +
            (result.serverCpuSeconds === undefined
              ? ''
              : `, server CPU ${((1000 * result.serverCpuSeconds) / paths.length).toFixed(2)} ms/path`) +
            ` (other processes ${result.otherCores.toFixed(2)} cores)`,
        );
      }
    }
    const summary = TARGETS.map((target) => {
      const mine = runs.filter((r) => r.target === target);
      const seconds = median(mine.map((r) => r.seconds));
      const cpu = mine.every((r) => r.serverCpuSeconds !== undefined)
        ? median(mine.map((r) => r.serverCpuSeconds ?? 0))
        : undefined;
      return { target, seconds, pathsPerSecond: paths.length / seconds, serverCpuSeconds: cpu };
    });
    const floor = summary.find((s) => s.target === 'null')?.seconds ?? NaN;
    const lines = [
      `| ${paths.length} small paths, ${push.compression} | wall time (median of ${push.rounds}) | paths/s | ÷ null server | niche CPU per path |`,
      '|---|--:|--:|--:|--:|',
      ...summary.map(
        (s) =>
          `| ${s.target === 'null' ? '`nix copy --to` null server' : s.target === 'nix-copy' ? '`nix copy --to` niche' : `\`niche push --jobs ${push.jobs}\` to niche`} | ` +
          `${s.seconds.toFixed(2)} s | ${s.pathsPerSecond.toFixed(0)} | ${(s.seconds / floor).toFixed(2)}× | ` +
          `${s.serverCpuSeconds === undefined ? '' : `${((1000 * s.serverCpuSeconds) / paths.length).toFixed(2)} ms`} |`,
      ),
    ];
    const markdown = lines.join('\n') + '\n';
    writeFileSync(
      join(OUT, 'push.json'),
      JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
          push,
          paths: paths.length,
          runs,
          summary,
        },
        null,
        2,
      ) + '\n',
    );
    writeFileSync(join(OUT, 'push.md'), markdown);
    process.stdout.write(markdown);
    log(`done in ${elapsed(started)}; bench/out/push.json, bench/out/push.md`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

runBench(main);
