// `npm run bench:ssh`: `nix copy --from` of a closure over SSH, niche against what teams run today, in one
// run. One sshd on loopback serves every contender, each reached with its own key whose authorized_keys
// line forces the server side:
//   - niche's embedded SSH server (`niche serve --ssh-listen`, on its own port), ssh-ng:// and ssh://;
//   - niche ssh-serve behind the same sshd (the key registered with `niche ssh-key add`), ssh:// and
//     ssh-ng://;
//   - OpenSSH + `nix-store --serve` (ssh://) and OpenSSH + `nix-daemon --stdio` (ssh-ng://) serving the
//     same paths from this machine's /nix/store, as NixOS's nix.sshServe does;
//   - niche over HTTP, for reference.
// The closure is pushed to niche over ssh:// first (timed too), then each copy goes to a fresh local store
// (`--to local?root=…`), timed by hyperfine. Writes docs/bench-ssh.md and prints the table.
//
// Needs root (sshd), nix, openssh-server/client and hyperfine. Parameters (environment variables):
//   BENCH_SSH_CLOSURE=200   small paths referenced by the top-level path
//   BENCH_SSH_RUNS=3        hyperfine runs per contender
//   BENCH_SSH_HUGE_GB=4     size of one NAR pushed and pulled over ssh:// while niche ssh-serve's peak RSS
//                           is watched (0: skip)
//   BENCH_SEED=1            seed of the corpus sizes
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { buildCorpus, nixEnv } from './corpus.js';
import { parseParams } from './params.js';
import { killAll, log, run, track } from './proc.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const NICHE = join(REPO, 'bin', 'niche.js');
const OUT = join(REPO, 'bench', 'out');

interface Contender {
  readonly name: string;
  readonly url: string;
  /** The client key file (SSH contenders). */
  readonly key?: string;
  /** The SSH port, if not sshd's. */
  readonly port?: number;
}

interface Timing {
  readonly name: string;
  readonly mean: number;
  readonly stddev: number;
  readonly min: number;
  readonly runs: number;
}

function shellQuote(text: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('no free port');
  return address.port;
}

async function waitForPort(port: number, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => {
        resolve(false);
      });
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port}`);
    await sleep(50);
  }
}

function start(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'], ...(env ? { env } : {}) });
  track(child);
  return child;
}

/** The highest VmHWM of any `niche ssh-serve` process seen while `work` runs, in bytes. */
async function peakOfSshServe(work: () => Promise<unknown>): Promise<number> {
  let peak = 0;
  const poll = (): void => {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('\0ssh-serve\0')) continue;
        const hwm = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'));
        if (hwm?.[1] !== undefined) peak = Math.max(peak, Number(hwm[1]) * 1024);
      } catch {
        // gone meanwhile
      }
    }
  };
  const timer = setInterval(poll, 100);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  return peak;
}

async function main(): Promise<void> {
  const closureSize = Number(process.env.BENCH_SSH_CLOSURE ?? '200');
  const runs = Number(process.env.BENCH_SSH_RUNS ?? '3');
  const hugeGb = Number(process.env.BENCH_SSH_HUGE_GB ?? '4');
  // The corpus parameters of bench/params.ts (which refuses names it does not know, so ours stay out).
  const shared = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('BENCH_SSH_')),
  );
  const params = parseParams({
    ...shared,
    BENCH_SMALL_COUNT: String(closureSize),
    BENCH_CLOSURE_SIZE: String(closureSize),
    BENCH_MEDIUM_MB: '',
    BENCH_LARGE_MB: '0',
  });
  const tmp = mkdtempSync(join(tmpdir(), 'niche-bench-ssh-'));
  const home = join(tmp, 'home');
  mkdirSync(home);
  const env = nixEnv(home);
  mkdirSync(OUT, { recursive: true });
  try {
    log(`corpus: a closure of ${closureSize + 1} paths`);
    const corpus = await buildCorpus(params, {
      workDir: join(OUT, 'ssh-corpus'),
      gcRoot: join(OUT, 'ssh-corpus-root'),
      env,
    });

    // niche: a data dir, a cache, a push key for the benchmark's pushes.
    const data = join(tmp, 'data');
    const niche = (...args: string[]): string =>
      execFileSync(process.execPath, [NICHE, ...args, '--data', data], { encoding: 'utf8' });
    niche('cache', 'create', 'bench', '--private');
    for (const name of ['host', 'niche', 'serve', 'daemon']) {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(tmp, name)]);
    }
    niche('ssh-key', 'add', '--cache', 'bench', '--push', join(tmp, 'niche.pub'));
    const pull = niche('token', 'create', '--cache', 'bench').trim();
    const pub = (name: string): string => readFileSync(join(tmp, `${name}.pub`), 'utf8').trim();
    writeFileSync(
      join(tmp, 'authorized_keys'),
      [
        niche('ssh-authorized-keys').trim(),
        `restrict,command="nix-store --serve --write" ${pub('serve')}`,
        `restrict,command="nix-daemon --stdio" ${pub('daemon')}`,
      ].join('\n') + '\n',
    );

    const httpPort = await freePort();
    const embeddedPort = await freePort();
    start(process.execPath, [
      NICHE,
      'serve',
      '--data',
      data,
      '--listen',
      `127.0.0.1:${httpPort}`,
      '--ssh-listen',
      `127.0.0.1:${embeddedPort}`,
      '--log-level',
      'warn',
    ]);
    await waitForPort(httpPort, 'niche');
    await waitForPort(embeddedPort, "niche's SSH server");
    const embeddedHostKey = execFileSync('ssh-keygen', ['-y', '-f', join(data, 'ssh_host_ed25519_key')], {
      encoding: 'utf8',
    }).trim();
    const sshPort = await freePort();
    mkdirSync('/run/sshd', { recursive: true });
    start('/usr/sbin/sshd', [
      '-D',
      '-e',
      '-f',
      '/dev/null',
      '-h',
      join(tmp, 'host'),
      '-p',
      String(sshPort),
      '-o',
      'ListenAddress=127.0.0.1',
      '-o',
      `AuthorizedKeysFile=${join(tmp, 'authorized_keys')}`,
      '-o',
      'StrictModes=no',
      '-o',
      'PidFile=none',
      '-o',
      'UsePAM=no',
      '-o',
      'PermitRootLogin=prohibit-password',
      '-o',
      'MaxStartups=100',
      '-o',
      'LogLevel=ERROR',
    ]);
    await waitForPort(sshPort, 'sshd');
    writeFileSync(
      join(tmp, 'known_hosts'),
      `[127.0.0.1]:${sshPort} ${pub('host')}\n[127.0.0.1]:${embeddedPort} ${embeddedHostKey}\n`,
    );
    const sshOpts = (key: string, port = sshPort): string =>
      [
        `-p ${port}`,
        `-i ${join(tmp, key)}`,
        `-o UserKnownHostsFile=${join(tmp, 'known_hosts')}`,
        '-o StrictHostKeyChecking=yes',
        '-o IdentitiesOnly=yes',
        '-o BatchMode=yes',
      ].join(' ');
    writeFileSync(join(tmp, 'netrc'), `machine 127.0.0.1 login niche password ${pull}\n`);
    const clientEnv = (key?: string, port?: number): NodeJS.ProcessEnv => ({
      ...nixEnv(home, [`netrc-file = ${join(tmp, 'netrc')}`]),
      ...(key === undefined ? {} : { NIX_SSHOPTS: sshOpts(key, port) }),
    });

    log('push: nix copy --to ssh:// (niche ssh-serve)');
    const pushed = await run('nix', ['copy', '--to', 'ssh://root@127.0.0.1', corpus.top], {
      env: clientEnv('niche'),
    });
    log(`pushed ${closureSize + 1} paths in ${pushed.seconds.toFixed(2)} s`);

    const contenders: Contender[] = [
      {
        name: 'niche ssh-ng:// (embedded server)',
        url: 'ssh-ng://bench@127.0.0.1',
        key: 'niche',
        port: embeddedPort,
      },
      {
        name: 'niche ssh:// (embedded server)',
        url: 'ssh://bench@127.0.0.1',
        key: 'niche',
        port: embeddedPort,
      },
      { name: 'niche ssh:// (ssh-serve)', url: 'ssh://root@127.0.0.1', key: 'niche' },
      { name: 'OpenSSH + nix-store --serve, ssh://', url: 'ssh://root@127.0.0.1', key: 'serve' },
      { name: 'OpenSSH + nix-daemon --stdio, ssh-ng://', url: 'ssh-ng://root@127.0.0.1', key: 'daemon' },
      { name: 'niche HTTP', url: `http://127.0.0.1:${httpPort}/bench` },
    ];
    // niche over ssh-ng:// once it answers a store ping there.
    try {
      await run('nix', ['store', 'ping', '--store', 'ssh-ng://root@127.0.0.1'], { env: clientEnv('niche') });
      contenders.splice(1, 0, {
        name: 'niche ssh-ng:// (ssh-serve)',
        url: 'ssh-ng://root@127.0.0.1',
        key: 'niche',
      });
    } catch {
      log('niche does not answer ssh-ng:// here: left out');
    }

    const timings: Timing[] = [];
    for (const contender of contenders) {
      const root = join(tmp, 'dest');
      const json = join(tmp, 'hyperfine.json');
      const command = [
        'nix',
        'copy',
        '--no-check-sigs',
        '--from',
        contender.url,
        '--to',
        `local?root=${root}`,
        corpus.top,
      ]
        .map(shellQuote)
        .join(' ');
      log(`nix copy --from: ${contender.name}`);
      await run(
        'hyperfine',
        ['--runs', String(runs), '--prepare', `rm -rf ${shellQuote(root)}`, '--export-json', json, command],
        { env: clientEnv(contender.key, contender.port) },
      );
      const { stdout } = await run(
        'nix',
        ['path-info', '--store', `local?root=${root}`, '--recursive', corpus.top],
        {
          env: clientEnv(),
        },
      );
      const copied = stdout.split('\n').filter((line) => line !== '').length;
      if (copied !== closureSize + 1)
        throw new Error(`${contender.name}: ${copied} paths copied, not ${closureSize + 1}`);
      rmSync(root, { recursive: true, force: true });
      const result = (
        JSON.parse(readFileSync(json, 'utf8')) as {
          results: { mean: number; stddev: number | null; min: number; times: number[] }[];
        }
      ).results[0];
      if (result === undefined) throw new Error(`no hyperfine result for ${contender.name}`);
      timings.push({
        name: contender.name,
        mean: result.mean,
        stddev: result.stddev ?? 0,
        min: result.min,
        runs: result.times.length,
      });
    }

    let huge = '';
    if (hugeGb > 0) {
      log(`a ${hugeGb} GiB path pushed and pulled over ssh:// (niche ssh-serve), peak RSS watched`);
      const expression = join(tmp, 'huge.nix');
      writeFileSync(
        expression,
        `derivation { name = "bench-ssh-huge-${hugeGb}g"; system = builtins.currentSystem; builder = "/bin/sh"; ` +
          `PATH = "/bin:/usr/bin"; args = [ "-c" "truncate -s ${hugeGb}G $out" ]; }\n`,
      );
      const built = await run('nix-build', [expression, '--out-link', join(OUT, 'ssh-huge-root')], { env });
      const path = built.stdout.trim().split('\n').at(-1) ?? '';
      const started = performance.now();
      const pushPeak = await peakOfSshServe(() =>
        run('nix', ['copy', '--to', 'ssh://root@127.0.0.1', path], { env: clientEnv('niche') }),
      );
      const pushSeconds = (performance.now() - started) / 1000;
      const root = join(tmp, 'dest-huge');
      const pulledAt = performance.now();
      const pullPeak = await peakOfSshServe(() =>
        run(
          'nix',
          ['copy', '--no-check-sigs', '--from', 'ssh://root@127.0.0.1', '--to', `local?root=${root}`, path],
          {
            env: clientEnv('niche'),
          },
        ),
      );
      const pullSeconds = (performance.now() - pulledAt) / 1000;
      rmSync(root, { recursive: true, force: true });
      const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
      huge =
        `A ${hugeGb} GiB NAR over ssh:// through niche ssh-serve: push ${pushSeconds.toFixed(1)} s, peak RSS ` +
        `${mib(pushPeak)}; pull ${pullSeconds.toFixed(1)} s, peak RSS ${mib(pullPeak)} (target < 250 MiB).`;
      log(huge);
    }

    const base = (name: string): Timing | undefined => timings.find((timing) => timing.name.startsWith(name));
    const ratio = (a: Timing | undefined, b: Timing | undefined): string =>
      a === undefined || b === undefined ? 'n/a' : `${(a.mean / b.mean).toFixed(2)}×`;
    const nicheSsh = base('niche ssh:// (ssh-serve)');
    const nicheNg = base('niche ssh-ng:// (ssh-serve)');
    const embeddedNg = base('niche ssh-ng:// (embedded');
    const embeddedSsh = base('niche ssh:// (embedded');
    const lines = [
      '# Benchmark: `nix copy --from` over SSH',
      '',
      '<!-- Generated by `npm run bench:ssh` (bench/ssh.ts); edits are overwritten. -->',
      '',
      `Run of ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, Nix ${execFileSync('nix', ['--version'], { encoding: 'utf8' }).trim().split(' ').at(-1) ?? ''}, ` +
        `a closure of ${closureSize + 1} small paths (xz-compressed in niche), ${runs} runs each, one sshd on loopback. ` +
        `The push to niche over ssh:// (verified and signed) took ${pushed.seconds.toFixed(2)} s.`,
      '',
      '| contender | mean | ± | min |',
      '| --- | --- | --- | --- |',
      ...timings.map(
        (timing) =>
          `| ${timing.name} | ${timing.mean.toFixed(2)} s | ${timing.stddev.toFixed(2)} s | ${timing.min.toFixed(2)} s |`,
      ),
      '',
      `- niche ssh:// ÷ OpenSSH + nix-store --serve: ${ratio(nicheSsh, base('OpenSSH + nix-store'))} (target ≤ 1.1×)`,
      `- niche ssh-ng:// ÷ OpenSSH + nix-daemon --stdio: ${ratio(nicheNg, base('OpenSSH + nix-daemon'))} (target ≤ 1.1×)`,
      `- niche ssh-ng:// (embedded server) ÷ OpenSSH + nix-daemon --stdio: ${ratio(embeddedNg, base('OpenSSH + nix-daemon'))} (target ≤ 1.1×)`,
      `- niche ssh:// (embedded server) ÷ OpenSSH + nix-store --serve: ${ratio(embeddedSsh, base('OpenSSH + nix-store'))} (target ≤ 1.1×)`,
      `- niche ssh-ng:// (embedded server) ÷ niche HTTP: ${ratio(embeddedNg, base('niche HTTP'))}`,
      `- niche ssh:// ÷ niche HTTP: ${ratio(nicheSsh, base('niche HTTP'))}`,
      '',
      ...(huge === '' ? [] : [huge, '']),
    ];
    writeFileSync(join(REPO, 'docs', 'bench-ssh.md'), lines.join('\n'));
    process.stdout.write(lines.join('\n'));
  } finally {
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  killAll();
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
