// Whether a substituter added to the user's nix.conf will actually be used. With a multi-user install the
// nix-daemon does the downloading, and it ignores `extra-substituters` from users who are not in
// `trusted-users` unless the URL is also in `trusted-substituters`; `niche use` explains this instead of
// leaving the user wondering why nothing is substituted. Settings come from `nix show-config --json`
// (Nix 2.8; `nix config show --json` in newer versions).
import { access, constants, readFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import type { NixRunner } from './nix-command.js';

export interface NixTrustSettings {
  readonly trustedUsers: readonly string[];
  readonly trustedSubstituters: readonly string[];
  /** The `store` setting: `auto`, `daemon`, `local`, `unix://…`. */
  readonly store: string;
}

function listValue(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === 'string');
  if (typeof value === 'string') return value.split(/\s+/).filter((item) => item !== '');
  return [];
}

/** The effective value of a setting in `nix show-config --json` output (`{name: {value, …}}`). */
function settingValue(config: Record<string, unknown>, name: string): unknown {
  const entry = config[name];
  if (typeof entry === 'object' && entry !== null && !Array.isArray(entry) && 'value' in entry) {
    return entry.value;
  }
  return entry;
}

export function parseNixConfigJson(text: string): NixTrustSettings {
  const parsed: unknown = JSON.parse(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error('nix show-config --json did not print an object');
  }
  const config = parsed as Record<string, unknown>;
  const store = settingValue(config, 'store');
  return {
    trustedUsers: listValue(settingValue(config, 'trusted-users')),
    trustedSubstituters: listValue(settingValue(config, 'trusted-substituters')),
    store: typeof store === 'string' ? store : 'auto',
  };
}

export async function readNixTrustSettings(run: NixRunner): Promise<NixTrustSettings> {
  let text: string;
  try {
    text = await run(['show-config', '--json']);
  } catch (error) {
    // Newer Nix renamed it; try that before giving up with the first error.
    text = await run(['config', 'show', '--json']).catch(() => {
      throw error;
    });
  }
  return parseNixConfigJson(text);
}

export interface UserIdentity {
  readonly name: string;
  readonly uid: number;
  /** Names of the user's groups (primary and supplementary). */
  readonly groups: readonly string[];
}

/** The current user and the names of their groups (from /etc/group, by gid). */
export async function currentUser(groupFile = '/etc/group'): Promise<UserIdentity> {
  const info = userInfo();
  const gids = new Set([
    ...(process.getgroups?.() ?? []),
    ...(process.getgid === undefined ? [] : [process.getgid()]),
  ]);
  const groups: string[] = [];
  const text = await readFile(groupFile, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const [name, , gid, members] = line.split(':');
    if (name === undefined || name === '' || gid === undefined) continue;
    if (gids.has(Number(gid)) || (members ?? '').split(',').includes(info.username)) groups.push(name);
  }
  return { name: info.username, uid: info.uid, groups };
}

/** Whether this user talks to the store directly (single-user install) rather than through the daemon. */
export async function usesLocalStore(
  settings: NixTrustSettings,
  dbDir = '/nix/var/nix/db',
): Promise<boolean> {
  if (settings.store === 'daemon' || settings.store.startsWith('unix://')) return false;
  if (settings.store === 'local' || settings.store.startsWith('local?') || settings.store.startsWith('/'))
    return true;
  // `auto`: Nix uses the local store when its database is writable, the daemon otherwise.
  return access(dbDir, constants.W_OK).then(
    () => true,
    () => false,
  );
}

export type TrustVerdict =
  { readonly kind: 'ok'; readonly why: string } | { readonly kind: 'untrusted'; readonly why: string };

/** Whether `user`'s nix.conf substituter `url` will be honoured. */
export function judgeTrust(
  settings: NixTrustSettings,
  user: UserIdentity,
  url: string,
  localStore: boolean,
): TrustVerdict {
  if (localStore) return { kind: 'ok', why: 'single-user install: nix uses your nix.conf directly' };
  if (user.uid === 0) return { kind: 'ok', why: 'root is always a trusted user' };
  const entries = settings.trustedUsers;
  if (entries.includes('*')) return { kind: 'ok', why: 'trusted-users = * trusts every user' };
  if (entries.includes(user.name)) return { kind: 'ok', why: `${user.name} is in trusted-users` };
  const group = user.groups.find((name) => entries.includes(`@${name}`));
  if (group !== undefined) return { kind: 'ok', why: `${user.name} is in the trusted group @${group}` };
  const strip = (text: string): string => text.replace(/\/+$/, '');
  if (settings.trustedSubstituters.some((entry) => strip(entry) === strip(url))) {
    return { kind: 'ok', why: `${url} is listed in trusted-substituters` };
  }
  return {
    kind: 'untrusted',
    why:
      `${user.name} is not a trusted user of the nix-daemon (trusted-users = ${entries.join(' ') || '(none)'}), ` +
      `so the daemon ignores extra-substituters from your nix.conf unless they are listed in ` +
      `trusted-substituters. Either run \`niche use --system …\` as root (the daemon then uses the cache for ` +
      `everyone; restart nix-daemon afterwards), or have root add you to trusted-users, or add ${url} to ` +
      'trusted-substituters, in /etc/nix/nix.conf.',
  };
}
