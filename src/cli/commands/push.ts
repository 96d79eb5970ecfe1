// `niche push <alias>/<cache>|<url> <paths…>`: pushes the closures of store paths (or of paths read from
// stdin with --stdin, e.g. $OUT_PATHS in a post-build hook). Progress on stderr, the summary on stdout;
// the exit code is non-zero if any path could not be pushed.
import type { Command } from 'commander';
import { nixRunner } from '../../client/nix-command.js';
import { formatSummary, reporterFor } from '../../client/progress.js';
import { DEFAULT_JOBS, type PushSummary, pushClosures } from '../../client/push.js';
import { connect, fetchCacheInfo, openSession, requireToken } from '../../client/session.js';
import type { UploadCompression } from '../../client/upload.js';
import { type ErrorKind, InvalidInputError, NicheError } from '../../errors.js';
import { print, type CliIo } from '../io.js';

interface PushOptions {
  readonly stdin?: boolean;
  readonly jobs: string;
  readonly compression: string;
}

const COMPRESSIONS: readonly UploadCompression[] = ['zstd', 'xz', 'none'];
/** --stdin input is capped (about 10 000 000 paths' worth) so a runaway producer cannot exhaust memory. */
const MAX_STDIN_BYTES = 1 << 30;

export class PushFailedError extends NicheError {
  constructor(kind: ErrorKind, message: string) {
    super(kind, 'PUSH_FAILED', message);
  }
}

export function parseJobs(text: string): number {
  if (!/^\d{1,3}$/.test(text) || Number(text) < 1 || Number(text) > 256) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `--jobs expects a number from 1 to 256, got ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

export function parseUploadCompression(text: string): UploadCompression {
  const found = COMPRESSIONS.find((name) => name === text);
  if (found === undefined) {
    throw new InvalidInputError(
      'BAD_REQUEST',
      `--compression expects one of ${COMPRESSIONS.join(', ')}, got ${JSON.stringify(text)}`,
    );
  }
  return found;
}

async function readPathsFrom(stream: NodeJS.ReadableStream): Promise<string[]> {
  let text = '';
  for await (const chunk of stream) {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (text.length > MAX_STDIN_BYTES)
      throw new InvalidInputError('BAD_REQUEST', 'more than 1 GiB of paths on stdin');
  }
  return text.split(/\s+/).filter((path) => path !== '');
}

/**
 * The error for a push that left paths behind, or undefined if everything got there: the server's own
 * error when one stopped the push (a token without push permission: exit 77 with the server's message).
 */
export function pushOutcomeError(summary: PushSummary): NicheError | undefined {
  const failed = summary.failed.length + summary.skippedDependency + summary.cancelled;
  if (failed === 0) return undefined;
  if (summary.stoppedBy !== undefined) return summary.stoppedBy;
  const first = summary.failed[0]?.error;
  const kind: ErrorKind = first instanceof NicheError ? first.kind : 'unavailable';
  return new PushFailedError(kind, `${failed} of ${summary.closure} paths were not pushed`);
}

export function registerPush(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('push')
    .description('push the closures of store paths to a cache')
    .argument('<cache>', '<alias>/<cache> (see niche login) or http(s)://host[:port]/<cache>')
    .argument('[paths...]', 'store paths, or links to them such as ./result')
    .option('--stdin', 'also read paths (separated by whitespace) from standard input')
    .option('-j, --jobs <n>', 'uploads in parallel', String(DEFAULT_JOBS))
    .option('--compression <name>', `NAR compression: ${COMPRESSIONS.join(', ')}`, 'zstd')
    .action((spec: string, argPaths: string[], options: PushOptions) =>
      run(async () => {
        const jobs = parseJobs(options.jobs);
        const compression = parseUploadCompression(options.compression);
        const session = await openSession(io.env);
        const { target, client } = connect(session, spec);
        requireToken(target, 'pushing');
        const fromStdin: string[] = [];
        if (options.stdin === true) {
          if (io.stdin === undefined) {
            throw new InvalidInputError('BAD_REQUEST', '--stdin given but there is no standard input');
          }
          fromStdin.push(...(await readPathsFrom(io.stdin)));
        }
        const paths = [...argPaths, ...fromStdin];
        if (paths.length === 0) {
          if (options.stdin !== true)
            throw new InvalidInputError('BAD_REQUEST', 'no paths given (or use --stdin)');
          print(io.stderr, 'nothing to push: no paths on stdin');
          return 0;
        }
        const cacheInfo = await fetchCacheInfo(client, target.cache);
        const reporter = reporterFor(io.stderr);
        let summary: PushSummary;
        try {
          summary = await pushClosures(
            {
              client,
              cache: target.cache,
              cacheInfo,
              nix: nixRunner({ env: io.env }),
              reporter,
              compression,
              jobs,
            },
            paths,
          );
        } finally {
          reporter.done();
        }
        print(io.stdout, formatSummary(summary));
        const failure = pushOutcomeError(summary);
        if (failure !== undefined) throw failure;
        return 0;
      }),
    );
}
