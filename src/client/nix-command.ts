// Running the local `nix` for the client commands (`nix path-info`, `nix show-config`): one place that
// enables the nix-command feature (Nix 2.8 needs it), bounds the captured output, and turns "not
// installed" and failures into NixCommandErrors that quote what nix said.
import { spawn } from 'node:child_process';
import { NixCommandError } from './errors.js';

/** Runs `nix <args>` and resolves with its stdout. */
export type NixRunner = (args: readonly string[], options?: { signal?: AbortSignal }) => Promise<string>;

export interface NixRunnerOptions {
  /** The environment nix runs with (the CLI's injected env). */
  readonly env: NodeJS.ProcessEnv;
  /** The nix binary; `nix` from PATH by default. */
  readonly nixBinary?: string;
  /** Larger outputs fail (a closure of 100 000 paths prints about 60 MiB of JSON). */
  readonly maxOutputBytes?: number;
}

const DEFAULT_MAX_OUTPUT = 256 << 20;
/** How much of stderr is kept for the error message. */
const STDERR_TAIL = 4096;

export function nixRunner(options: NixRunnerOptions): NixRunner {
  const binary = options.nixBinary ?? 'nix';
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  return (args, runOptions = {}) =>
    new Promise<string>((resolve, reject) => {
      const fullArgs = ['--extra-experimental-features', 'nix-command', ...args];
      const shown = `nix ${args.slice(0, 5).join(' ')}${args.length > 5 ? ` … (${args.length} arguments)` : ''}`;
      const child = spawn(binary, fullArgs, {
        env: options.env,
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(runOptions.signal === undefined ? {} : { signal: runOptions.signal }),
      });
      const stdout: Buffer[] = [];
      let stdoutSize = 0;
      let stderr = '';
      let tooLarge = false;
      child.stdout.on('data', (chunk: Buffer) => {
        stdoutSize += chunk.length;
        if (stdoutSize > maxOutput) {
          tooLarge = true;
          child.kill('SIGTERM');
          return;
        }
        stdout.push(chunk);
      });
      child.stderr.setEncoding('utf8').on('data', (text: string) => {
        stderr = (stderr + text).slice(-STDERR_TAIL);
      });
      child.on('error', (error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') {
          reject(
            new NixCommandError(
              'NIX_UNAVAILABLE',
              `the nix command (${binary}) is not installed or not on PATH`,
              { cause: error },
            ),
          );
        } else {
          reject(error);
        }
      });
      child.on('close', (code, signal) => {
        if (runOptions.signal?.aborted === true) {
          const reason: unknown = runOptions.signal.reason;
          reject(reason instanceof Error ? reason : new Error('aborted'));
        } else if (tooLarge) {
          reject(new NixCommandError('NIX_COMMAND_FAILED', `${shown} printed more than ${maxOutput} bytes`));
        } else if (code === 0) {
          resolve(Buffer.concat(stdout).toString('utf8'));
        } else {
          const status = signal === null ? `exit code ${code}` : `signal ${signal}`;
          reject(
            new NixCommandError('NIX_COMMAND_FAILED', `${shown} failed with ${status}: ${stderr.trim()}`),
          );
        }
      });
    });
}
