// Puts paths into a private Nix store and copies them to a file:// binary cache with the real `nix`, so
// tests can compare niche's narinfos, listings and signatures with what Nix itself writes.

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { nixLocalStore, runNix } from '../../helpers/nix.js';
import { makeTempDir } from './fixtures.js';

export class NixStoreFixture {
  readonly store: string;
  readonly home: string;
  readonly cacheDir: string;

  constructor(t: { after(fn: () => void): void }) {
    const dir = makeTempDir(t, 'niche-nix-store-');
    this.home = join(dir, 'home');
    this.cacheDir = join(dir, 'cache');
    mkdirSync(this.home);
    this.store = nixLocalStore(join(dir, 'root'));
  }

  async nix(args: string[], input?: string): Promise<string> {
    const { stdout } = await runNix('nix', ['--store', this.store, ...args], {
      home: this.home,
      ...(input === undefined ? {} : { input }),
    });
    return stdout.toString();
  }

  /** `nix store add-path`: adds a file or tree, returns its store path. */
  async addPath(path: string, name: string): Promise<string> {
    return (await this.nix(['store', 'add-path', path, '--name', name])).trim();
  }

  /** A .drv that refers to a builtins.toFile text file: two text-addressed paths, one referring to the other. */
  async instantiate(): Promise<{ drv: string; text: string }> {
    const expr =
      'derivation { name = "niche-test"; system = "x86_64-linux"; builder = "/bin/sh";' +
      ' args = [ (builtins.toFile "niche-input.txt" "some text\\n") ]; }';
    const { stdout } = await runNix('nix-instantiate', ['--store', this.store, '--expr', expr], {
      home: this.home,
    });
    const drv = stdout.toString().trim();
    const refs = await this.nix(['path-info', '--derivation', '--json', drv]);
    const info = JSON.parse(refs) as { references: string[] }[];
    const text = info[0]?.references[0];
    if (text === undefined) throw new Error(`no reference from ${drv}`);
    return { drv, text };
  }

  /** `nix copy` to the file:// cache, uncompressed, with listings. */
  async copyToCache(paths: string[], extra = ''): Promise<void> {
    const url = `file://${this.cacheDir}?compression=none&write-nar-listing=true${extra}`;
    await this.nix(['copy', ...derivationFlag(paths), '--to', url, ...paths]);
  }

  cacheFile(name: string): string {
    return readFileSync(join(this.cacheDir, name), 'utf8');
  }

  cacheBytes(name: string): Buffer {
    return readFileSync(join(this.cacheDir, name));
  }

  /** `nix path-info --json --sigs` of one path. */
  async pathInfo(
    path: string,
  ): Promise<{ narHash: string; narSize: number; references: string[]; signatures?: string[]; ca?: string }> {
    const info = JSON.parse(
      await this.nix(['path-info', ...derivationFlag([path]), '--json', '--sigs', path]),
    ) as {
      narHash: string;
      narSize: number;
      references: string[];
      signatures?: string[];
      ca?: string;
    }[];
    const first = info[0];
    if (first === undefined) throw new Error(`no path info for ${path}`);
    return first;
  }
}

/** The hash part of a full store path. */
export function hashPart(path: string): string {
  return path.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

/** `--derivation` makes the new CLI take .drv paths as themselves rather than build their outputs. */
function derivationFlag(paths: string[]): string[] {
  return paths.some((path) => path.endsWith('.drv')) ? ['--derivation'] : [];
}
