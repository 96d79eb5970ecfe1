// The deployment files: the systemd unit passes `systemd-analyze verify` without a warning, and the NixOS
// module parses, and evaluates (with a small stand-in for nixpkgs' lib, which is not available here) to a
// service whose settings niche's own config parser accepts and whose hardening is the unit's.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'smol-toml';
import { loadServeConfig } from '../../src/config.js';
import { REPO_ROOT } from '../helpers/cli-process.js';
import { nixTestOptions, runNix } from '../helpers/nix.js';

const run = promisify(execFile);
const UNIT = join(REPO_ROOT, 'deploy', 'systemd', 'niche.service');
const MODULE = join(REPO_ROOT, 'deploy', 'nixos', 'module.nix');

/** The [Service] settings of a unit file, last value of each key (comments and blanks skipped). */
function serviceSettings(text: string): Map<string, string> {
  const settings = new Map<string, string>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1] !== undefined) {
      section = header[1];
      continue;
    }
    const eq = line.indexOf('=');
    if (section === 'Service' && eq > 0) settings.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return settings;
}

let systemdAnalyze = true;
try {
  await run('systemd-analyze', ['--version']);
} catch {
  systemdAnalyze = false;
}

describe('deploy/systemd/niche.service', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'niche-deploy-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it(
    'passes systemd-analyze verify without a warning (ExecStart pointed at this checkout)',
    {
      skip:
        !systemdAnalyze && process.env.CI !== 'true'
          ? 'systemd-analyze is not installed (it is required when CI=true)'
          : false,
    },
    async () => {
      const text = readFileSync(UNIT, 'utf8');
      assert.match(text, /^ExecStart=\/usr\/bin\/niche serve --config \/etc\/niche\/niche\.toml$/m);
      const unit = join(dir, 'niche.service');
      await writeFile(unit, text.replace('/usr/bin/niche', join(REPO_ROOT, 'bin', 'niche.js')));
      const { stderr } = await run('systemd-analyze', ['verify', unit]);
      assert.equal(stderr, '', 'systemd-analyze verify warned');
      // A unit with a misspelt key is refused by the same check: the check can fail.
      const bad = join(dir, 'bad.service');
      await writeFile(
        bad,
        readFileSync(unit, 'utf8').replace('UMask=0077', 'UMask=0077\nProtectSytem=strict'),
      );
      const checked = await run('systemd-analyze', ['verify', bad]);
      assert.match(checked.stderr, /Unknown key 'ProtectSytem'/);
    },
  );

  it('is hardened', () => {
    const settings = serviceSettings(readFileSync(UNIT, 'utf8'));
    for (const [key, value] of [
      ['DynamicUser', 'yes'],
      ['StateDirectory', 'niche'],
      ['ProtectSystem', 'strict'],
      ['NoNewPrivileges', 'yes'],
      ['CapabilityBoundingSet', ''],
      ['PrivateTmp', 'yes'],
      ['ProtectHome', 'yes'],
      ['SystemCallFilter', '@system-service'],
    ] as const) {
      assert.equal(settings.get(key), value, key);
    }
  });
});

/** nixpkgs' lib and pkgs, as far as the module uses them; mkIf and mkDefault are kept visible. */
const HARNESS = (module: string, user: string): string => `
let
  lib = rec {
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: mkOption { type = types.bool; default = false; description = "Whether to enable \${name}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkDefault = value: value;
    optional = condition: value: if condition then [ value ] else [ ];
    optionalAttrs = condition: attrs: if condition then attrs else { };
    types = {
      bool = "bool"; package = "package"; path = "path"; nullOr = t: "null or \${t}";
    };
    toInt = builtins.fromJSON;
    last = list: builtins.elemAt list (builtins.length list - 1);
    splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
    getExe' = package: name: "\${package.outPath}/bin/\${name}";
  };
  pkgs.formats.toml = { }: {
    type = "toml value";
    generate = name: value: "/nix/store/00000000000000000000000000000000-\${name}";
  };
  module = import ${module};
  user = ${user};
  # The options' defaults under what the user set (what the module system's merge gives, for these types).
  defaults = builtins.mapAttrs (name: option: if option ? default then option.default else null)
    (builtins.removeAttrs (module { config.services.niche = user; inherit lib pkgs; }).options.services.niche [ "localStore" ]);
  withDefaults = defaults // user // { localStore = { enable = false; root = false; } // (user.localStore or { }); };
  first = module { config.services.niche = withDefaults; inherit lib pkgs; };
  settings = first.config.content.services.niche.settings // (user.settings or { });
  final = (module { config.services.niche = withDefaults // { inherit settings; }; inherit lib pkgs; }).config;
in {
  options = builtins.attrNames first.options.services.niche;
  enabled = final.condition;
  inherit settings;
  firewall = final.content.networking.firewall.allowedTCPPorts;
  service = final.content.systemd.services.niche;
}
`;

interface Evaluated {
  readonly options: string[];
  readonly enabled: boolean;
  readonly settings: Record<string, unknown>;
  readonly firewall: { readonly condition: boolean; readonly content: number[] };
  readonly service: {
    readonly wantedBy: string[];
    readonly environment: Record<string, string>;
    readonly serviceConfig: Record<string, unknown>;
  };
}

describe('deploy/nixos/module.nix', nixTestOptions('2.8'), () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'niche-nixos-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const evaluate = async (user: string): Promise<Evaluated> => {
    const file = join(dir, 'harness.nix');
    await writeFile(file, HARNESS(MODULE, user));
    const { stdout } = await runNix('nix-instantiate', ['--eval', '--strict', '--json', file]);
    return JSON.parse(stdout.toString('utf8')) as Evaluated;
  };

  it('parses', async () => {
    await runNix('nix-instantiate', ['--parse', MODULE]);
  });

  it('renders settings niche accepts, secrets by credential, the firewall, and the unit file hardening', async () => {
    const evaluated = await evaluate(`{
      enable = true;
      package = { outPath = "/nix/store/11111111111111111111111111111111-niche-0.1.0"; };
      openFirewall = true;
      signingKeyFile = "/var/keys/cache.sk";
      tlsCertFile = "/var/keys/fullchain.pem";
      tlsKeyFile = "/var/keys/tls.key";
      environmentFile = "/var/keys/niche.env";
      localStore.enable = true;
      settings = { public-url = "https://cache.example.org"; listen = [ "0.0.0.0:5000" "[::]:8080" ]; limits.max-nar-size = "16G"; };
    }`);
    assert.deepEqual(evaluated.options, [
      'enable',
      'environmentFile',
      'localStore',
      'openFirewall',
      'package',
      'settings',
      'signingKeyFile',
      'tlsCertFile',
      'tlsKeyFile',
    ]);
    assert.equal(evaluated.enabled, true);
    assert.deepEqual(evaluated.settings, {
      'data-dir': '/var/lib/niche',
      listen: ['0.0.0.0:5000', '[::]:8080'],
      'signing-key-file': '/run/credentials/niche.service/signing-key',
      'tls-cert': '/run/credentials/niche.service/tls-cert',
      'tls-key': '/run/credentials/niche.service/tls-key',
      'local-store': { enabled: true, root: false },
      'public-url': 'https://cache.example.org',
      limits: { 'max-nar-size': '16G' },
    });
    assert.deepEqual(evaluated.firewall, { _type: 'if', condition: true, content: [5000, 8080] });
    const { serviceConfig } = evaluated.service;
    assert.equal(
      serviceConfig.ExecStart,
      '/nix/store/11111111111111111111111111111111-niche-0.1.0/bin/niche serve --config ' +
        '/nix/store/00000000000000000000000000000000-niche.toml',
    );
    assert.deepEqual(serviceConfig.LoadCredential, [
      'signing-key:/var/keys/cache.sk',
      'tls-cert:/var/keys/fullchain.pem',
      'tls-key:/var/keys/tls.key',
    ]);
    assert.deepEqual(serviceConfig.EnvironmentFile, ['/var/keys/niche.env']);
    assert.deepEqual(evaluated.service.wantedBy, ['multi-user.target']);
    assert.equal(evaluated.service.environment.NICHE_DATA, '/var/lib/niche');

    // The same hardening as the plain unit file.
    const unit = serviceSettings(readFileSync(UNIT, 'utf8'));
    const nixValue = (value: unknown): string =>
      value === true
        ? 'yes'
        : value === false
          ? 'no'
          : Array.isArray(value)
            ? value.join(' ')
            : String(value);
    for (const key of [
      'DynamicUser',
      'StateDirectory',
      'StateDirectoryMode',
      'UMask',
      'NoNewPrivileges',
      'CapabilityBoundingSet',
      'ProtectSystem',
      'ProtectHome',
      'PrivateTmp',
      'PrivateDevices',
      'ProtectKernelTunables',
      'ProtectKernelModules',
      'ProtectKernelLogs',
      'ProtectControlGroups',
      'ProtectClock',
      'ProtectHostname',
      'ProtectProc',
      'RestrictAddressFamilies',
      'RestrictNamespaces',
      'RestrictRealtime',
      'RestrictSUIDSGID',
      'LockPersonality',
      'RemoveIPC',
      'SystemCallArchitectures',
      'SystemCallFilter',
      'SystemCallErrorNumber',
      'LimitNOFILE',
      'KillSignal',
      'TimeoutStopSec',
      'Restart',
      'RestartSec',
    ]) {
      assert.equal(nixValue(serviceConfig[key]), unit.get(key), `${key}: module and unit file agree`);
    }

    // niche's own parser takes the rendered file (with paths that exist here).
    const toml = join(dir, 'niche.toml');
    const key = join(dir, 'cache.sk');
    await writeFile(key, '');
    await writeFile(toml, stringify({ ...evaluated.settings, 'data-dir': dir, 'signing-key-file': key }));
    const config = loadServeConfig({ config: toml }, {});
    assert.equal(config.publicUrl, 'https://cache.example.org');
    assert.equal(config.localStore?.mountAtRoot, false);
    assert.equal(config.limits.maxNarSize, 16 * 2 ** 30);
    assert.deepEqual(config.tls, {
      certFile: '/run/credentials/niche.service/tls-cert',
      keyFile: '/run/credentials/niche.service/tls-key',
    });
    assert.deepEqual(
      config.listen.map((address) => ('port' in address ? address.port : address.socketPath)),
      [5000, 8080],
    );
  });

  it('does nothing unless enabled, and keeps data-dir and listen defaults', async () => {
    const evaluated = await evaluate('{ package = { outPath = "/nix/store/x"; }; }');
    assert.equal(evaluated.enabled, false);
    assert.deepEqual(evaluated.settings, { 'data-dir': '/var/lib/niche', listen: ['[::]:5000'] });
    assert.deepEqual(evaluated.firewall, { _type: 'if', condition: false, content: [5000] });
  });
});
