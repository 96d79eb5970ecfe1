// `niche use`: turns a cache's public description (GET /api/v1/caches/<cache>) into Nix configuration.
// Either edits nix.conf (substituter and keys) and, for a private cache, a netrc with the token, or
// renders the equivalent NixOS module. File edits are idempotent (src/client/nix-conf.ts): the netrc is
// written before nix.conf, so nix.conf never names credentials that are not there yet.
import type { CacheInfo } from '../api/v1.js';
import { UnauthenticatedError, UnsupportedError } from '../errors.js';
import { readTextIfExists, writeFileAtomic } from './atomic-file.js';
import { addSubstituter, addTrustedPublicKeys, getSetting, setIfAbsent, setNetrcEntry } from './nix-conf.js';

export const NETRC_LOGIN = 'niche';
export const NETRC_MODE = 0o600;

export interface UseFiles {
  readonly nixConf: string;
  /** Used for private caches unless nix.conf already names a `netrc-file`. */
  readonly defaultNetrc: string;
}

export interface FileChange {
  readonly file: string;
  readonly changed: boolean;
}

export interface UseResult {
  readonly nixConf: FileChange;
  /** Only for private caches. */
  readonly netrc: (FileChange & { readonly action: 'added' | 'replaced' | 'unchanged' }) | undefined;
}

/**
 * The URL to configure for a cache: the one the user reached the server at (`<server>/<cache>`), which
 * just worked from this machine. The server's own idea (`info.url`) comes from `public-url` or from the
 * request, and behind a TLS proxy that is not configured for it, it says `http://` where the user used
 * `https://`; writing that would break Nix and send the token in clear. When the two differ, the
 * user's wins and `serverSays` tells what the server answered, for a warning.
 */
export function cacheUrlFor(
  info: CacheInfo,
  serverUrl: string,
): { readonly url: string; readonly serverSays: string | undefined } {
  const mine = `${serverUrl}/${info.name}`;
  const same = (a: string, b: string): boolean => {
    try {
      const [x, y] = [new URL(a), new URL(b)];
      return x.origin === y.origin && x.pathname.replace(/\/+$/, '') === y.pathname.replace(/\/+$/, '');
    } catch {
      return false;
    }
  };
  return { url: mine, serverSays: same(mine, info.url) ? undefined : info.url };
}

/** The host a netrc entry must name for `url` (curl matches the host without the port). */
export function netrcHost(url: string): string {
  return new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
}

export async function configureNix(
  info: CacheInfo,
  token: string | undefined,
  files: UseFiles,
): Promise<UseResult> {
  const before = (await readTextIfExists(files.nixConf)) ?? '';
  let text = addTrustedPublicKeys(addSubstituter(before, info.url), info.publicKeys);
  let netrc: UseResult['netrc'];
  if (!info.public) {
    if (token === undefined) {
      throw new UnauthenticatedError(
        'TOKEN_MISSING',
        `cache ${info.name} is private: log in with a token that may pull from it first (or set NICHE_TOKEN)`,
      );
    }
    // Nix uses the last netrc-file setting; an existing one is respected and receives the entry.
    const netrcFile = getSetting(text, 'netrc-file') ?? files.defaultNetrc;
    text = setIfAbsent(text, 'netrc-file', netrcFile);
    const netrcBefore = (await readTextIfExists(netrcFile)) ?? '';
    const edit = setNetrcEntry(netrcBefore, netrcHost(info.url), NETRC_LOGIN, token);
    if (edit.text !== netrcBefore) {
      await writeFileAtomic(netrcFile, edit.text, { mode: NETRC_MODE, dirMode: 0o755 });
    }
    netrc = { file: netrcFile, changed: edit.text !== netrcBefore, action: edit.action };
  }
  if (text !== before) await writeFileAtomic(files.nixConf, text);
  return { nixConf: { file: files.nixConf, changed: text !== before }, netrc };
}

const nixString = (text: string): string => JSON.stringify(text).replace(/\$\{/g, '\\${');

/** A NixOS module that configures the cache system-wide (printed by `niche use --nixos`). */
export function nixosSnippet(info: CacheInfo, netrcFile: string): string {
  const keys = info.publicKeys.map((key) => `      ${nixString(key)}\n`).join('');
  const lines = [
    `# niche cache ${info.name}: add to configuration.nix (or import it), then nixos-rebuild switch`,
    '{',
    '  nix.settings = {',
    `    substituters = [ ${nixString(info.url)} ];`,
    '    trusted-public-keys = [',
    keys.trimEnd(),
    '    ];',
  ];
  if (!info.public) {
    lines.push(
      '    # The cache is private: the daemon reads its token from this netrc file. Keep the file out of',
      '    # the Nix store (it is world-readable): create it by hand with mode 0600, or with a secrets',
      '    # manager such as agenix or sops-nix, containing one line:',
      `    #   machine ${netrcHost(info.url)} login ${NETRC_LOGIN} password <token>`,
      `    netrc-file = ${nixString(netrcFile)};`,
    );
  }
  lines.push('  };', '}');
  return `${lines.join('\n')}\n`;
}

export interface SshFiles {
  readonly nixConf: string;
  /** The ssh client configuration that gets the port (`~/.ssh/config`). */
  readonly sshConfig: string;
  readonly knownHosts: string;
}

export interface SshUseResult {
  readonly url: string;
  readonly nixConf: FileChange;
  /** Undefined when the server listens on port 22 (nothing to configure). */
  readonly sshConfig: FileChange | undefined;
  readonly knownHosts: FileChange;
}

/** The known_hosts entry for the server's SSH host key. */
export function knownHostsLine(ssh: NonNullable<CacheInfo['ssh']>): string {
  const name = ssh.port === 22 ? ssh.host : `[${ssh.host}]:${ssh.port}`;
  return `${name} ${ssh.hostKey}`;
}

/** Whether an ssh_config already has a `Host` line naming `host` (then it is left as the user wrote it). */
function hasHostBlock(config: string, host: string): boolean {
  return config.split('\n').some((line) => {
    const match = /^\s*Host\s+(.+)$/i.exec(line);
    return match?.[1]?.trim().split(/\s+/).includes(host) === true;
  });
}

/**
 * `niche use --ssh`: the cache as an ssh-ng:// substituter (nix.conf), the server's port in the ssh client
 * configuration and its host key in known_hosts. Idempotent; a `Host` block the user already has for the
 * server is left alone.
 */
export async function configureSsh(info: CacheInfo, files: SshFiles): Promise<SshUseResult> {
  const ssh = info.ssh;
  if (ssh === undefined || ssh === null) {
    throw new UnsupportedError(
      `the server does not serve cache ${info.name} over SSH (its operator can start niche serve --ssh-listen)`,
    );
  }
  const before = (await readTextIfExists(files.nixConf)) ?? '';
  const text = addTrustedPublicKeys(addSubstituter(before, ssh.url), info.publicKeys);
  if (text !== before) await writeFileAtomic(files.nixConf, text);

  let sshConfig: FileChange | undefined;
  if (ssh.port !== 22) {
    const config = (await readTextIfExists(files.sshConfig)) ?? '';
    const changed = !hasHostBlock(config, ssh.host);
    if (changed) {
      const separator = config === '' || config.endsWith('\n') ? '' : '\n';
      const block = `${separator}\n# niche: cache ${info.name}\nHost ${ssh.host}\n  Port ${ssh.port}\n`;
      await writeFileAtomic(files.sshConfig, config + block, { mode: 0o600, dirMode: 0o700 });
    }
    sshConfig = { file: files.sshConfig, changed };
  }

  const line = knownHostsLine(ssh);
  const known = (await readTextIfExists(files.knownHosts)) ?? '';
  const present = known.split('\n').some((existing) => existing.trim() === line);
  if (!present) {
    const separator = known === '' || known.endsWith('\n') ? '' : '\n';
    await writeFileAtomic(files.knownHosts, `${known}${separator}${line}\n`, { mode: 0o644, dirMode: 0o700 });
  }
  return {
    url: ssh.url,
    nixConf: { file: files.nixConf, changed: text !== before },
    sshConfig,
    knownHosts: { file: files.knownHosts, changed: !present },
  };
}

/** A NixOS module for the cache over SSH (printed by `niche use --ssh --nixos`). */
export function nixosSshSnippet(info: CacheInfo): string {
  const ssh = info.ssh;
  if (ssh === undefined || ssh === null) {
    throw new UnsupportedError(`the server does not serve cache ${info.name} over SSH`);
  }
  const keys = info.publicKeys.map((key) => `      ${nixString(key)}\n`).join('');
  const lines = [
    `# niche cache ${info.name} over SSH: add to configuration.nix (or import it), then nixos-rebuild switch.`,
    '# The nix-daemon connects as root: root needs an SSH key registered on the server (niche ssh-key add).',
    '{',
    '  nix.settings = {',
    `    substituters = [ ${nixString(ssh.url)} ];`,
    '    trusted-public-keys = [',
    keys.trimEnd(),
    '    ];',
    '  };',
    `  programs.ssh.knownHosts.${nixString(`niche-${info.name}`)} = {`,
    `    hostNames = [ ${nixString(ssh.port === 22 ? ssh.host : `[${ssh.host}]:${ssh.port}`)} ];`,
    `    publicKey = ${nixString(ssh.hostKey)};`,
    '  };',
  ];
  if (ssh.port !== 22) {
    lines.push(`  programs.ssh.extraConfig = ${nixString(`Host ${ssh.host}\n  Port ${ssh.port}\n`)};`);
  }
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
