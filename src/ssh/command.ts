// What an SSH client asks to run decides which protocol the session speaks. Nix runs exactly one of two
// commands on the remote host (PROTOCOL.md §8.1, PROTOCOL-worker.md §10.1): `nix-store --serve [--write]`
// for ssh:// stores and `nix-daemon --stdio` for ssh-ng://, possibly with a `--store <url>` (from the
// remote-store parameter), a `--` Nix 2.20+ puts before the command, environment assignments
// (`FOO=bar nix-store …`) and a full path to the program (remote-program). Anything else (a shell, scp,
// sftp, another program) is refused: niche serves caches, not a host.

import { SshCommandRefusedError } from '../errors.js';

export type SshCommand =
  { readonly protocol: 'serve'; readonly write: boolean } | { readonly protocol: 'daemon' };

/** Longest command line considered at all. */
const MAX_COMMAND_LENGTH = 4096;

/** Splits a command line into words, honouring simple single and double quotes (as a POSIX shell would). */
function splitWords(command: string): string[] {
  const words: string[] = [];
  let current = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < command.length; i++) {
    const c = command.charAt(i);
    if (quote !== undefined) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < command.length) current += command.charAt(++i);
      else current += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < command.length) {
      current += command.charAt(++i);
      inWord = true;
    } else if (c === ' ' || c === '\t' || c === '\n') {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else if (';&|<>`$()'.includes(c)) {
      throw refused(command, `the shell character ${JSON.stringify(c)}`);
    } else {
      current += c;
      inWord = true;
    }
  }
  if (quote !== undefined) throw refused(command, 'an unterminated quote');
  if (inWord) words.push(current);
  return words;
}

function refused(command: string, why: string): SshCommandRefusedError {
  const shown = JSON.stringify(command.length > 200 ? `${command.slice(0, 200)}…` : command);
  return new SshCommandRefusedError(
    `niche serves Nix caches only: it runs "nix-store --serve [--write]" (ssh://) and ` +
      `"nix-daemon --stdio" (ssh-ng://), not ${shown} (${why})`,
  );
}

/** The program's name without its directory (`/run/current-system/sw/bin/nix-store` → `nix-store`). */
function programName(word: string): string {
  return word.slice(word.lastIndexOf('/') + 1);
}

/**
 * Parses the command an SSH client asked to run (undefined: it asked for a shell). Throws
 * SshCommandRefusedError for anything but Nix's two remote commands.
 */
export function parseSshCommand(command: string | undefined): SshCommand {
  if (command === undefined || command.trim() === '') {
    throw refused('', 'an interactive shell');
  }
  if (command.length > MAX_COMMAND_LENGTH) throw refused(command, 'too long');
  const words = splitWords(command);
  let i = 0;
  // `env` and `VAR=value` prefixes, and Nix's `--` separator.
  while (i < words.length) {
    const word = words[i] ?? '';
    if (word === '--' || programName(word) === 'env' || /^[A-Za-z_][A-Za-z0-9_]*=/.test(word)) i++;
    else break;
  }
  const program = programName(words[i] ?? '');
  const args = words.slice(i + 1);
  const options = new Set<string>();
  for (let j = 0; j < args.length; j++) {
    const arg = args[j] ?? '';
    if (arg === '--store') {
      // The remote store is the cache the session is for; the URL is accepted and ignored.
      if (j + 1 >= args.length) throw refused(command, '--store without a value');
      j++;
    } else if (arg.startsWith('--store=')) {
      continue;
    } else {
      options.add(arg);
    }
  }
  if (program === 'nix-store') {
    const write = options.delete('--write');
    if (options.delete('--serve') && options.size === 0) return { protocol: 'serve', write };
    throw refused(command, 'nix-store is served with --serve [--write] only');
  }
  if (program === 'nix-daemon') {
    if (options.delete('--stdio') && options.size === 0) return { protocol: 'daemon' };
    throw refused(command, 'nix-daemon is served with --stdio only');
  }
  throw refused(command, program === '' ? 'no program' : `the program ${JSON.stringify(program)}`);
}
