// `npm run bench:ops`: what the operations features cost the request a binary cache answers most, a
// narinfo hit (issue 14, items 3 and 4), each against a baseline measured in the same run:
//   1. access log on / off (plain HTTP);
//   2. TLS / plain HTTP (access log on, the default);
//   3. niche + TLS / nginx + TLS on the same tree (the narinfos niche serves, written as files), access
//      logs on for both (niche's default; nginx's default combined format to a file), target >= 0.6;
//   4. the same with access logs off for both.
// The four niche servers (plain or TLS, access log on or off) run in ONE process, from a tsc build, on one
// data directory, so the comparisons among them run the same compiled code on the same heap
// (bench/metrics-overhead.ts says why that matters); their log goes to a file, as a deployment's goes
// to journald. nginx runs one worker. Servers are pinned to CPU 0, wrk to CPU 1 (with two or more CPUs);
// wrk speaks HTTP/1.1 over TLS (keep-alive: the handshakes are a few of the first requests). Each
// comparison is a series of pairs of short wrk runs, one against each side, the order alternating; the
// result is the median of the pairs' ratios. A pair during which other processes used more than
// OPS_MAX_OTHER_CORES is measured again. Writes bench/out/ops.json and docs/bench-ops.md.
//
// Needs wrk and nginx (apt-get install -y wrk nginx-light).
//
// Parameters (environment variables):
//   OPS_PATHS=1000             small paths (the narinfos wrk cycles through)
//   OPS_PAIRS=10               pairs of runs per comparison
//   OPS_DURATION_S=2           seconds per run
//   OPS_CONNECTIONS=64         wrk connections
//   OPS_MAX_OTHER_CORES=0.3    a pair during which other processes used more is measured again
//   OPS_QUIET_WAIT_S=20        wait up to this long before each pair for other processes to calm down
//   OPS_KEEP_TMP=0             1: keep the temporary directory (logs, trees)

import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as prettier from 'prettier';
import { fakeBaseName, fixture, narInfoText } from '../test/helpers/nar-fixtures.js';
import { cpuSecondsOf, waitForQuiet, withLoad } from './load.js';
import { killAll, log, run, setAffinity, stopChild, track } from './proc.js';
import { buildNiche, createPushToken, freePort, pusher, startNiche } from './servers.js';
import { runWrk, writePaths } from './wrk.js';
import { envNumber, median } from './env.js';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(REPO, 'bench', 'out');
const CERT = join(REPO, 'test', 'helpers', 'tls', 'localhost.crt');
const KEY = join(REPO, 'test', 'helpers', 'tls', 'localhost.key');
/** The issue's target: niche + TLS at least 0.6 × nginx + TLS. */
const TARGET_VS_NGINX = 0.6;

const params = {
  paths: envNumber('OPS_PATHS', 1000),
  pairs: envNumber('OPS_PAIRS', 10),
  durationS: envNumber('OPS_DURATION_S', 2),
  connections: envNumber('OPS_CONNECTIONS', 64),
  maxOtherCores: envNumber('OPS_MAX_OTHER_CORES', 0.3),
  quietWaitS: envNumber('OPS_QUIET_WAIT_S', 20),
  keepTmp: process.env.OPS_KEEP_TMP === '1',
};

type NicheSetting = 'plain-off' | 'plain-on' | 'tls-off' | 'tls-on';
const SETTINGS: readonly NicheSetting[] = ['plain-off', 'plain-on', 'tls-off', 'tls-on'];

/** A server wrk can load: its origin and the processes whose CPU it uses. */
interface Target {
  readonly name: string;
  readonly origin: string;
  readonly pids: () => number[];
}

/** The four niche servers in one process: startServer four times, from the tsc build. */
function quadServerScript(build: string): string {
  const server = pathToFileURL(join(build, 'app', 'server.js')).href;
  const config = pathToFileURL(join(build, 'config.js')).href;
  return `
import { startServer } from ${JSON.stringify(server)};
import { loadServeConfig } from ${JSON.stringify(config)};
const [data, cert, key] = process.argv.slice(2);
const servers = {};
for (const setting of ${JSON.stringify(SETTINGS)}) {
  const tls = setting.startsWith('tls') ? { tlsCert: cert, tlsKey: key } : {};
  const accessLog = setting.endsWith('-on') ? 'on' : 'off';
  const config = loadServeConfig({ data, listen: '127.0.0.1:0', logLevel: 'warn', accessLog, ...tls }, {});
  servers[setting] = await startServer(config);
}
process.stderr.write('QUAD_URLS ' + JSON.stringify(Object.fromEntries(Object.entries(servers).map(([k, s]) => [k, s.url]))) + '\\n');
process.once('SIGINT', () => {
  Promise.all(Object.values(servers).map((server) => server.close())).then(() => process.exit(0));
});
`;
}

async function startQuad(
  script: string,
  dataDir: string,
  logFile: string,
): Promise<{ child: ChildProcess; origins: Record<NicheSetting, string> }> {
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [script, dataDir, CERT, KEY], { stdio: ['ignore', fd, 'pipe'] });
  } finally {
    closeSync(fd);
  }
  track(child);
  const stderr = child.stderr;
  if (stderr === null) throw new Error('no stderr');
  const origins = await new Promise<Record<NicheSetting, string>>((resolve, reject) => {
    let text = '';
    stderr.setEncoding('utf8');
    stderr.on('data', (chunk: string) => {
      text += chunk;
      const line = text.split('\n').find((l) => l.startsWith('QUAD_URLS '));
      if (line !== undefined)
        resolve(JSON.parse(line.slice('QUAD_URLS '.length)) as Record<NicheSetting, string>);
    });
    child.once('exit', () => {
      reject(new Error(`the niche servers exited before listening:\n${text}`));
    });
  });
  stderr.resume();
  return { child, origins };
}

/** nginx with one worker over `root`, HTTPS with the test certificate, access log on (to a file) or off. */
function nginxTlsConfig(root: string, dir: string, port: number, accessLog: boolean): string {
  const user = process.getuid?.() === 0 ? 'user root;\n' : '';
  return `# Generated by bench/ops.ts.
${user}worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events {
  worker_connections 4096;
}
http {
  ${accessLog ? `access_log ${join(dir, 'access.log')};` : 'access_log off;'}
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  types {
    text/x-nix-narinfo narinfo;
    text/x-nix-cache-info nix-cache-info;
  }
  default_type application/x-nix-nar;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${CERT};
    ssl_certificate_key ${KEY};
    root ${root};
  }
}
`;
}

async function startNginxTls(
  root: string,
  dir: string,
  accessLog: boolean,
): Promise<{ child: ChildProcess; origin: string }> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxTlsConfig(root, dir, port, accessLog));
  const fd = openSync(join(dir, 'stderr.log'), 'a');
  let child: ChildProcess;
  try {
    child = spawn('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf, '-g', 'daemon off;'], {
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  track(child);
  const origin = `https://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      await run('curl', ['-sfk', '-o', '/dev/null', `${origin}/main/nix-cache-info`]);
      break;
    } catch (error) {
      if (i > 100) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return { child, origin };
}

/** `pid` and its direct children (nginx's master and its worker). */
function withChildren(pid: number): number[] {
  const children = readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false; // exited meanwhile
      }
    })
    .map(Number);
  return [pid, ...children];
}

/** Uploads the small paths; returns the narinfo request paths. */
async function populate(origin: string, token: string, root: string): Promise<string[]> {
  const put = pusher(origin, token);
  const narinfos: string[] = [];
  mkdirSync(join(root, 'main', 'nar'), { recursive: true });
  for (let i = 0; i < params.paths; i++) {
    const fx = await fixture(`path ${i}\n`, 'none');
    const base = fakeBaseName(`ops-bench-${i}`);
    const path = `/main/${base.slice(0, 32)}.narinfo`;
    await put(`/main/nar/${fx.fileName}`, fx.file);
    await put(path, narInfoText(base, fx));
    // nginx serves exactly what niche serves (signed), as files.
    const served = await (await fetch(`${origin}${path}`)).text();
    writeFileSync(join(root, path), served);
    writeFileSync(join(root, 'main', 'nar', fx.fileName), fx.file);
    narinfos.push(path);
  }
  writeFileSync(
    join(root, 'main', 'nix-cache-info'),
    await (await fetch(`${origin}/main/nix-cache-info`)).text(),
  );
  return narinfos;
}

interface Round {
  readonly requestsPerSecond: number;
  readonly cpuUsPerRequest: number;
  readonly p99Ms: number;
}

async function measure(
  target: Target,
  pathsFile: string,
  wrkCpu: number | undefined,
  warmup = false,
): Promise<{ round: Round; otherCores: number }> {
  const pids = target.pids();
  const before = cpuSecondsOf(pids);
  const { value: result, otherCores } = await withLoad(() =>
    runWrk({
      origin: target.origin,
      pathsFile,
      connections: params.connections,
      threads: 1,
      seconds: warmup ? 2 : params.durationS,
      expect: 'ok',
      warmup,
      ...(wrkCpu === undefined ? {} : { cpu: wrkCpu }),
    }),
  );
  const cpu = cpuSecondsOf(pids) - before;
  return {
    round: {
      requestsPerSecond: result.requestsPerSecond,
      cpuUsPerRequest: (cpu * 1e6) / Math.max(1, result.requests),
      p99Ms: result.latencyMs.p99,
    },
    otherCores,
  };
}

interface Comparison {
  readonly name: string;
  readonly subject: string;
  readonly baseline: string;
  /** Medians of the pairs' ratios subject / baseline. */
  readonly rpsRatio: number;
  readonly cpuRatio: number;
  readonly subjectRps: number;
  readonly baselineRps: number;
  readonly subjectCpuUs: number;
  readonly baselineCpuUs: number;
  readonly quartiles: readonly [number, number, number];
  readonly pairs: number;
  readonly discarded: number;
  /** No pair was measured on a quiet machine: these are the pairs measured while others were busy. */
  readonly busy: boolean;
}

async function compare(
  name: string,
  subject: Target,
  baseline: Target,
  pathsFile: string,
  wrkCpu: number | undefined,
): Promise<Comparison> {
  log(`${name}: ${subject.name} against ${baseline.name}`);
  for (const target of [subject, baseline]) await measure(target, pathsFile, wrkCpu, true);
  const pairs: { subject: Round; baseline: Round }[] = [];
  const busyPairs: { subject: Round; baseline: Round }[] = [];
  let discarded = 0;
  for (let attempt = 0; pairs.length < params.pairs && attempt < params.pairs * 3; attempt++) {
    await waitForQuiet({ maxOtherCores: params.maxOtherCores, maxWaitS: params.quietWaitS });
    const order = attempt % 2 === 0 ? [subject, baseline] : [baseline, subject];
    const results = new Map<Target, { round: Round; otherCores: number }>();
    for (const target of order) results.set(target, await measure(target, pathsFile, wrkCpu));
    const s = results.get(subject);
    const b = results.get(baseline);
    if (s === undefined || b === undefined) throw new Error('a run is missing');
    const ratio = s.round.requestsPerSecond / b.round.requestsPerSecond;
    const what = `${Math.round(s.round.requestsPerSecond)}/s vs ${Math.round(b.round.requestsPerSecond)}/s: ${ratio.toFixed(3)}`;
    if (Math.max(s.otherCores, b.otherCores) > params.maxOtherCores) {
      discarded++;
      busyPairs.push({ subject: s.round, baseline: b.round });
      log(`  discarded (other processes busy): ${what}`);
      continue;
    }
    pairs.push({ subject: s.round, baseline: b.round });
    log(`  pair ${pairs.length}: ${what}`);
  }
  // A machine never quiet enough: the busy pairs are reported, and marked so.
  const busy = pairs.length === 0;
  if (busy) {
    log(`  ${name}: no quiet pair; reporting the ${busyPairs.length} measured while others were busy`);
    pairs.push(...busyPairs);
  }
  if (pairs.length === 0) throw new Error(`${name}: no pair was measured`);
  const ratios = pairs
    .map((p) => p.subject.requestsPerSecond / p.baseline.requestsPerSecond)
    .sort((a, b) => a - b);
  const at = (q: number): number => ratios[Math.floor((ratios.length - 1) * q)] ?? 0;
  return {
    name,
    subject: subject.name,
    baseline: baseline.name,
    rpsRatio: median(ratios),
    cpuRatio: median(pairs.map((p) => p.subject.cpuUsPerRequest / p.baseline.cpuUsPerRequest)),
    subjectRps: median(pairs.map((p) => p.subject.requestsPerSecond)),
    baselineRps: median(pairs.map((p) => p.baseline.requestsPerSecond)),
    subjectCpuUs: median(pairs.map((p) => p.subject.cpuUsPerRequest)),
    baselineCpuUs: median(pairs.map((p) => p.baseline.cpuUsPerRequest)),
    quartiles: [at(0.25), at(0.5), at(0.75)],
    pairs: pairs.length,
    discarded: busy ? 0 : discarded,
    busy,
  };
}

const fmt = (value: number, digits = 0): string =>
  value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function markdown(date: string, pinned: boolean, comparisons: readonly Comparison[]): string {
  const rows = comparisons.map(
    (c) =>
      `| ${c.name} | ${c.subject} / ${c.baseline} | **${c.rpsRatio.toFixed(3)}** (${c.quartiles.map((q) => q.toFixed(3)).join(', ')}) | ` +
      `${c.cpuRatio.toFixed(3)} | ${fmt(c.subjectRps)} / ${fmt(c.baselineRps)} | ${fmt(c.subjectCpuUs, 1)} / ${fmt(c.baselineCpuUs, 1)} | ${c.pairs} (${c.busy ? 'all on a busy machine' : c.discarded}) |`,
  );
  const vsNginx = comparisons.find((c) => c.name.startsWith('niche + TLS vs nginx + TLS, access logs on'));
  return [
    '# Benchmark: access logs and TLS',
    '',
    '<!-- Generated by `npm run bench:ops` (bench/ops.ts, which says how it measures); edits are overwritten. -->',
    '',
    `Run ${date} on ${availableParallelism()} × ${cpus()[0]?.model ?? 'unknown'}. Narinfo hits from a public cache ` +
      `(${params.paths} different narinfos cycled, wrk over HTTP/1.1 with ${params.connections} keep-alive connections), ` +
      `in pairs of ${params.durationS} s runs, one against each side, the order alternating; each ratio is the median ` +
      "of the pairs' ratios (quartiles in parentheses). The four niche servers run in one process from a tsc build; " +
      'nginx runs one worker over the same narinfos written as files' +
      (pinned ? '; servers pinned to CPU 0, wrk to CPU 1.' : '.'),
    '',
    '| comparison | subject / baseline | request rate ratio | CPU per request ratio | requests/s | server CPU µs per request | pairs (re-measured) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
    '',
    vsNginx === undefined
      ? ''
      : `niche + TLS serves narinfo hits at ${vsNginx.rpsRatio.toFixed(2)} × nginx + TLS (access logs on for both); ` +
        `${vsNginx.rpsRatio >= TARGET_VS_NGINX ? 'meets' : 'misses'} the target of at least ${TARGET_VS_NGINX} ×.`,
    '',
    "niche's access log goes through pino to the log's file descriptor (a file here, journald's pipe under " +
      "systemd) in batches; nginx's access log is its default combined format, written per request.",
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  mkdirSync(OUT, { recursive: true });
  const tmp = mkdtempSync(join(OUT, 'ops-run-'));
  let quad: ChildProcess | undefined;
  const nginxes: ChildProcess[] = [];
  try {
    log('building niche (tsc)');
    const nicheMain = await buildNiche(REPO, join(tmp, 'build'));
    const pinned = availableParallelism() >= 2;
    const wrkCpu = pinned ? 1 : undefined;
    const dataDir = join(tmp, 'data');
    const root = join(tmp, 'tree');
    log(`populating the data directory and the nginx tree (${params.paths} paths)`);
    const populating = await startNiche({
      repo: REPO,
      dataDir,
      logFile: join(tmp, 'populate.log'),
      compiledMain: nicheMain,
    });
    let narinfos: string[];
    try {
      narinfos = await populate(populating.origin, await createPushToken(REPO, dataDir), root);
    } finally {
      await populating.stop();
    }
    const pathsFile = writePaths(join(tmp, 'narinfos.txt'), narinfos);
    const script = join(tmp, 'build', 'quad-server.mjs');
    writeFileSync(script, quadServerScript(join(tmp, 'build')));
    const started = await startQuad(script, dataDir, join(tmp, 'niche.log'));
    quad = started.child;
    const pid = started.child.pid ?? 0;
    const nginxOn = await startNginxTls(root, join(tmp, 'nginx-log-on'), true);
    const nginxOff = await startNginxTls(root, join(tmp, 'nginx-log-off'), false);
    nginxes.push(nginxOn.child, nginxOff.child);
    if (pinned) {
      await setAffinity(
        [pid, ...withChildren(nginxOn.child.pid ?? 0), ...withChildren(nginxOff.child.pid ?? 0)],
        '0',
      );
    }
    const niche = (setting: NicheSetting): Target => ({
      name: `niche ${setting.startsWith('tls') ? 'HTTPS' : 'HTTP'}, access log ${setting.endsWith('on') ? 'on' : 'off'}`,
      origin: started.origins[setting],
      pids: () => [pid],
    });
    const nginx = (server: { child: ChildProcess; origin: string }, accessLog: boolean): Target => ({
      name: `nginx HTTPS, access log ${accessLog ? 'on' : 'off'}`,
      origin: server.origin,
      pids: () => withChildren(server.child.pid ?? 0),
    });
    const comparisons = [
      await compare('access log on vs off (HTTP)', niche('plain-on'), niche('plain-off'), pathsFile, wrkCpu),
      await compare(
        'TLS vs plain HTTP (access log on)',
        niche('tls-on'),
        niche('plain-on'),
        pathsFile,
        wrkCpu,
      ),
      await compare(
        'niche + TLS vs nginx + TLS, access logs on',
        niche('tls-on'),
        nginx(nginxOn, true),
        pathsFile,
        wrkCpu,
      ),
      await compare(
        'niche + TLS vs nginx + TLS, access logs off',
        niche('tls-off'),
        nginx(nginxOff, false),
        pathsFile,
        wrkCpu,
      ),
    ];
    const date = new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
    writeFileSync(
      join(OUT, 'ops.json'),
      JSON.stringify({ date, params, pinned, comparisons }, null, 2) + '\n',
    );
    const file = join(REPO, 'docs', 'bench-ops.md');
    const options = (await prettier.resolveConfig(file)) ?? {};
    writeFileSync(
      file,
      await prettier.format(markdown(date, pinned, comparisons), { ...options, parser: 'markdown' }),
    );
    log(`wrote ${file} (${statSync(file).size} bytes) and bench/out/ops.json`);
    for (const c of comparisons)
      log(`${c.name}: ${c.rpsRatio.toFixed(3)} of the request rate, CPU ${c.cpuRatio.toFixed(3)}`);
  } finally {
    if (quad !== undefined) await stopChild(quad, 'SIGINT', 15_000);
    for (const child of nginxes) await stopChild(child, 'SIGQUIT');
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
