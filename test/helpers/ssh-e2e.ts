// What the SSH end-to-end tests share: a niche server with two private caches (team, other), a fake `ssh`
// (fake-ssh.ts) first on PATH that carries each session Nix opens to runSshSession in the test process,
// as the principal the test chooses, and a record of every session (its command, the worker operations
// it carried, its exit status), so a test can tell what a Nix version sent.

import type { Principal } from '../../src/cache/auth.js';
import { createCacheWithKey } from '../../src/cache/admin-service.js';
import { generateToken, hashToken } from '../../src/cache/tokens.js';
import type { Permission } from '../../src/db/metadata-store.js';
import { runSshSession } from '../../src/ssh/session.js';
import { startFakeSsh, type FakeSsh } from './fake-ssh.js';
import type { NixVersion } from './nix.js';
import { nixClient, type NixClient } from './nix-closure.js';
import { startTestServer, type TestServer } from './server.js';

/** One SSH session Nix opened. */
export interface RecordedSession {
  readonly command: string;
  /** The worker protocol's operations, by name, in order (none for the serve protocol). */
  readonly ops: string[];
  exitCode?: number;
}

export interface SshE2e {
  readonly t: TestServer;
  readonly ssh: FakeSsh;
  readonly client: NixClient;
  /** The team cache's public key (`name:base64`). */
  readonly teamKey: string;
  /** A token that may pull from team over HTTP. */
  readonly pullToken: string;
  /** Every session so far, oldest first. */
  readonly sessions: RecordedSession[];
  /** A fresh token principal with `permissions` on each of `caches`. */
  principal(caches: readonly string[], permissions: readonly Permission[]): Promise<Principal>;
  /** Who the next SSH sessions are. */
  setPrincipal(principal: Principal): void;
  /** Runs a Nix command with the fake ssh first on PATH. */
  nix(cmd: string, args: readonly string[]): Promise<{ stdout: Buffer; stderr: string }>;
  stop(): Promise<void>;
}

export async function startSshE2e(version: NixVersion): Promise<SshE2e> {
  const t = await startTestServer();
  const team = await createCacheWithKey(t.server.stores.db, { name: 'team', isPublic: false, priority: 40 });
  await createCacheWithKey(t.server.stores.db, { name: 'other', isPublic: false, priority: 40 });
  const keys = await t.server.service.keys(team);
  const teamKey = keys.signing[0]?.publicKey.toString() ?? '';
  const pullToken = generateToken();
  await t.server.stores.db.createToken({
    description: 'http pull',
    tokenHash: hashToken(pullToken),
    scopes: [{ cachePattern: 'team', permissions: ['pull'] }],
    expiresAt: undefined,
  });
  let sessionPrincipal: Principal = { kind: 'anonymous' };
  const sessions: RecordedSession[] = [];
  const ssh = await startFakeSsh(async (session) => {
    const record: RecordedSession = { command: session.command, ops: [] };
    sessions.push(record);
    const at = session.destination.indexOf('@');
    const result = await runSshSession({
      service: t.server.service,
      principal: sessionPrincipal,
      cacheName: at === -1 ? session.destination : session.destination.slice(0, at),
      command: session.command,
      input: session.input,
      output: session.output,
      stderr: session.stderr,
      log: {
        debug(obj: object, msg: string) {
          if (msg === 'worker operation' && 'op' in obj) record.ops.push(String(obj.op));
        },
        info: () => undefined,
        warn: () => undefined,
      },
    });
    record.exitCode = result.exitCode;
    return result.exitCode;
  });
  const client = await nixClient({ version });
  return {
    t,
    ssh,
    client,
    teamKey,
    pullToken,
    sessions,
    async principal(caches, permissions) {
      const token = await t.server.stores.db.createToken({
        description: 'ssh e2e',
        tokenHash: hashToken(generateToken()),
        scopes: caches.map((cachePattern) => ({ cachePattern, permissions: [...permissions] })),
        expiresAt: undefined,
      });
      return { kind: 'token', token };
    },
    setPrincipal(principal) {
      sessionPrincipal = principal;
    },
    nix: (cmd, args) => client.run('env', [`PATH=${ssh.binDir}:/usr/local/bin:/usr/bin:/bin`, cmd, ...args]),
    async stop() {
      await client.cleanup();
      await ssh.close();
      await t.stop();
    },
  };
}
