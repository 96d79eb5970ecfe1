// What Nix records about a valid store path (its database's ValidPaths and Refs tables, or what
// `nix path-info --json` prints): everything a binary cache needs to publish the path.
import type { Hash } from './hash.js';
import type { StorePath } from './store-path.js';

export interface ValidPathInfo {
  readonly storePath: StorePath;
  readonly narHash: Hash;
  readonly narSize: number;
  /** Including the path itself if it refers to itself. */
  readonly references: readonly StorePath[];
  /** Base name of the deriver, if Nix recorded one. */
  readonly deriver: string | undefined;
  /** Signatures Nix holds for the path (`nix store sign`, or those a substituted path came with). */
  readonly signatures: readonly string[];
  readonly ca: string | undefined;
}
