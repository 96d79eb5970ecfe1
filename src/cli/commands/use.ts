// `niche use <alias>/<cache>|<url>`: configures Nix to substitute from a cache (extra-substituters and
// extra-trusted-public-keys in nix.conf, plus netrc credentials for a private cache), or prints the NixOS
// module that does the same (`--nixos`). Running it twice changes nothing. Says so when the daemon will
// ignore the setting because the user is not trusted.
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { pushUrlOf } from '../../api/v1.js';
import { errorText } from '../../client/progress.js';
import { nixRunner } from '../../client/nix-command.js';
import { currentUser, judgeTrust, readNixTrustSettings, usesLocalStore } from '../../client/nix-trust.js';
import { connect, fetchCacheInfo, openSession } from '../../client/session.js';
import type { CacheTarget } from '../../client/target.js';
import {
  cacheUrlFor,
  configureNix,
  configureSsh,
  netrcHost,
  nixosSnippet,
  nixosSshSnippet,
} from '../../client/use-cache.js';
import { NixCommandError } from '../../client/errors.js';
import { UnauthenticatedError } from '../../errors.js';
import { print, type CliIo } from '../io.js';

/** A 401 for `niche use` says what to do about it: log in (again) with a token that may pull. */
function explainRefusal(error: unknown, target: CacheTarget): unknown {
  if (!(error instanceof UnauthenticatedError)) return error;
  const login = 'niche login <alias> <server-url> <token>';
  return target.token === undefined
    ? new UnauthenticatedError(
        'TOKEN_MISSING',
        `cache ${target.label} is private (or does not exist): log in with a token that may pull from it ` +
          `first (${login}, or set NICHE_TOKEN)`,
      )
    : new UnauthenticatedError(
        'TOKEN_INVALID',
        `the server refused the token used for ${target.label} (${error.message}): log in again with a ` +
          `valid token (${login}, or set NICHE_TOKEN)`,
      );
}

interface UseOptions {
  readonly system?: boolean;
  readonly nixConf?: string;
  readonly netrc?: string;
  readonly nixos?: boolean;
  readonly ssh?: boolean;
  readonly sshConfig?: string;
  readonly knownHosts?: string;
}

export function registerUse(
  program: Command,
  io: CliIo,
  run: (action: () => Promise<number>) => Promise<void>,
): void {
  program
    .command('use')
    .description('configure Nix to substitute from a cache (nix.conf, and netrc for a private cache)')
    .argument('<cache>', '<alias>/<cache> (see niche login) or http(s)://host[:port]/<cache>')
    .option('--system', 'edit /etc/nix/nix.conf and /etc/nix/netrc (as root) instead of your own')
    .option('--nix-conf <file>', 'the nix.conf to edit')
    .option('--netrc <file>', 'the netrc to write credentials to, unless nix.conf names one (netrc-file)')
    .option('--nixos', 'print a NixOS module instead of editing files')
    .option(
      '--ssh',
      "substitute over ssh-ng:// from the server's SSH server instead of HTTP (needs a registered SSH key)",
    )
    .option(
      '--ssh-config <file>',
      'with --ssh: the ssh client configuration to add the port to (default ~/.ssh/config)',
    )
    .option(
      '--known-hosts <file>',
      'with --ssh: the known_hosts file for the host key (default ~/.ssh/known_hosts)',
    )
    .action((spec: string, options: UseOptions) =>
      run(async () => {
        const session = await openSession(io.env);
        const { target, client } = connect(session, spec);
        const answer = await fetchCacheInfo(client, target.cache).catch((error: unknown) => {
          throw explainRefusal(error, target);
        });
        const { url, serverSays } = cacheUrlFor(answer, target.serverUrl);
        if (serverSays !== undefined) {
          print(
            io.stderr,
            `warning: the server gives this cache's URL as ${serverSays}, but you reached it at ` +
              `${target.serverUrl}; using ${url} (if the server is behind a proxy, its operator should ` +
              'set public-url or trusted-proxies)',
          );
        }
        const info = { ...answer, url };
        const system = options.system === true;
        if (options.ssh === true) {
          if (options.nixos === true) {
            print(io.stdout, nixosSshSnippet(info));
            return 0;
          }
          // The nix-daemon substitutes as root, with root's ssh configuration.
          const sshDir = system ? '/root/.ssh' : join(io.env.HOME ?? homedir(), '.ssh');
          const nixConf =
            options.nixConf ?? (system ? session.paths.systemNixConf : session.paths.userNixConf);
          const done = await configureSsh(info, {
            nixConf,
            sshConfig: options.sshConfig ?? join(sshDir, 'config'),
            knownHosts: options.knownHosts ?? join(sshDir, 'known_hosts'),
          });
          const said = (change: { file: string; changed: boolean }, what: string): string =>
            `${change.file}: ${change.changed ? 'added' : 'already has'} ${what}`;
          print(
            io.stdout,
            [
              said(done.nixConf, `${done.url} in extra-substituters and its keys`),
              ...(done.sshConfig === undefined
                ? []
                : [said(done.sshConfig, `the port of ${new URL(url).hostname}`)]),
              said(done.knownHosts, "the server's SSH host key"),
              `to push: nix copy --to ${done.url} <paths>`,
            ].join('\n'),
          );
          print(
            io.stderr,
            `note: the server lets in registered SSH keys only: its operator runs ` +
              `niche ssh-key add --cache ${info.name} [--push] '<your public key>'` +
              (system ? " (for the nix-daemon: root's key)" : ''),
          );
          return 0;
        }
        if (options.nixos === true) {
          print(io.stdout, nixosSnippet(info, options.netrc ?? session.paths.systemNetrc));
          return 0;
        }
        const nixConf = options.nixConf ?? (system ? session.paths.systemNixConf : session.paths.userNixConf);
        const defaultNetrc = options.netrc ?? (system ? session.paths.systemNetrc : session.paths.userNetrc);
        const result = await configureNix(info, target.token, { nixConf, defaultNetrc });

        const lines: string[] = [];
        lines.push(
          result.nixConf.changed
            ? `${nixConf}: added ${info.url} to extra-substituters and its keys to extra-trusted-public-keys`
            : `${nixConf}: already uses ${info.url}`,
        );
        if (result.netrc !== undefined) {
          const host = netrcHost(info.url);
          lines.push(
            result.netrc.action === 'unchanged'
              ? `${result.netrc.file}: already has the credentials for ${host}`
              : `${result.netrc.file}: ${result.netrc.action} the credentials for ${host} (mode 0600)`,
          );
        }
        // Pushing to the substituter URL would leave Nix's narinfo disk cache holding the unsigned
        // narinfos it uploaded, under the URL it substitutes from (src/http/push-url.ts).
        lines.push(`to push: niche push ${spec} <paths>, or nix copy --to ${pushUrlOf(info.url)} <paths>`);
        print(io.stdout, lines.join('\n'));
        if (result.netrc?.action === 'replaced') {
          print(
            io.stderr,
            `note: netrc entries are per host (not per port), so ${netrcHost(info.url)} now uses this token for every server on it`,
          );
        }
        if (system) {
          print(
            io.stderr,
            'note: restart the nix-daemon (e.g. systemctl restart nix-daemon) so it reads the change',
          );
          return 0;
        }
        await explainTrust(io, info.url);
        return 0;
      }),
    );
}

/** Tells the user if the daemon will ignore their substituter; never fails the command. */
async function explainTrust(io: CliIo, url: string): Promise<void> {
  try {
    const settings = await readNixTrustSettings(nixRunner({ env: io.env }));
    const verdict = judgeTrust(settings, await currentUser(), url, await usesLocalStore(settings));
    if (verdict.kind === 'untrusted') print(io.stderr, `warning: ${verdict.why}`);
  } catch (error) {
    if (error instanceof NixCommandError && error.code === 'NIX_UNAVAILABLE') {
      print(
        io.stderr,
        'note: nix is not installed (or not on PATH), so whether it will use the cache was not checked',
      );
    } else {
      print(
        io.stderr,
        `note: could not check whether nix trusts you to add substituters: ${errorText(error)}`,
      );
    }
  }
}
